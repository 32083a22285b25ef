"""The reporting API's `auth.login` tokens: HS256 JSON Web Tokens, by PyJWT.

The one place their algorithm and checks are chosen: a token must carry `exp` and be signed
with HS256 by this secret. `iat` is informative only: a token issued by a peer whose clock runs
a little ahead must not be refused here as "not yet valid".
"""

from __future__ import annotations

import secrets
from typing import Any

import jwt

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """Malformed, wrongly signed or expired."""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def encode(payload: dict[str, Any], secret: str) -> str:
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode(token: str, secret: str) -> dict[str, Any]:
    """The payload of a valid, unexpired token; raises `InvalidToken` otherwise."""
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM],
                          options={"require": ["exp"], "verify_iat": False})
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(str(exc)) from None
