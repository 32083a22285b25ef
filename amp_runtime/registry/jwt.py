"""HS256 JSON Web Tokens with the standard library (the reporting API's `auth.login` tokens)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any


class InvalidToken(Exception):
    """Malformed, wrongly signed or expired."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, signing_input: str) -> str:
    return _b64encode(hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest())


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def encode(payload: dict[str, Any], secret: str) -> str:
    header = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}"
    return f"{signing_input}.{_sign(secret, signing_input)}"


def decode(token: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """The payload of a valid, unexpired token; raises `InvalidToken` otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():  # a JWT is base64url: ASCII only
        raise InvalidToken("not a JWT")
    header_b64, body_b64, signature = parts
    if not hmac.compare_digest(signature.encode(), _sign(secret, f"{header_b64}.{body_b64}").encode()):
        raise InvalidToken("bad signature")
    try:
        header = json.loads(_b64decode(header_b64))
        payload = json.loads(_b64decode(body_b64))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("undecodable token") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(payload, dict):
        raise InvalidToken("unsupported token")
    exp = payload.get("exp")
    if not isinstance(exp, (int, float)) or (time.time() if now is None else now) >= exp:
        raise InvalidToken("expired")
    return payload
