"""What makes an outgoing HTTP header sendable, by the rules of the library that sends it.

Webhooks go out through httpx, which writes headers with h11: a name or value h11 refuses fails
every delivery attempt (`LocalProtocolError: Illegal header value`). So a header is judged by
h11's own `normalize_and_validate`, not by a look-alike regex, wherever it enters (a request's
`webhook.headers`, `[webhook] headers` in the config). Pure.
"""

from __future__ import annotations

from h11 import LocalProtocolError
from h11._headers import normalize_and_validate  # h11 exports no public validator

MAX_HEADERS = 64
MAX_NAME_LENGTH = 256
MAX_VALUE_LENGTH = 8192
# Framing and hop-by-hop headers belong to the sender's HTTP client, not to the request.
SENDER_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection", "te",
                            "upgrade", "trailer", "keep-alive", "proxy-connection"})


def _sendable(name: bytes, value: bytes) -> bool:
    try:
        normalize_and_validate([(name, value)])
    except LocalProtocolError:
        return False
    return True


def name_problem(name: str) -> str | None:
    if name.lower() in SENDER_HEADERS:  # first: h11 also judges their values (Content-Length "")
        return f"{name!r} is set by the sender, not by a request"
    if not name or len(name) > MAX_NAME_LENGTH or not name.isascii() or not _sendable(name.encode("ascii"), b""):
        return (f"name {name[:64]!r} is not an HTTP token (ASCII letters, digits and !#$%&'*+-.^_`|~, "
                f"1 to {MAX_NAME_LENGTH} characters)")
    return None


def value_problem(value: str) -> str | None:
    if len(value) > MAX_VALUE_LENGTH:
        return f"value longer than {MAX_VALUE_LENGTH} characters"
    try:
        encoded = value.encode("latin-1")  # what the sender puts on the wire (see webhooks.py)
    except UnicodeEncodeError:
        return "value must be latin-1"
    if not _sendable(b"x", encoded):
        return ("value is not a valid HTTP field value (no leading or trailing space or tab; "
                "no CR, LF, NUL or other whitespace but a space or tab inside)")
    if any(byte < 0x20 and byte != 0x09 or byte == 0x7F for byte in encoded):
        # h11 would send these, but RFC 9110 field values hold none: a receiver may refuse them.
        return "value must not hold control characters (a tab inside is fine)"
    return None


def header_problems(headers: dict[str, str]) -> list[tuple[str | None, str]]:
    """(header name or None for the whole set, problem) for every problem of `headers`."""
    if len(headers) > MAX_HEADERS:
        return [(None, f"at most {MAX_HEADERS} headers, got {len(headers)}")]
    problems: list[tuple[str | None, str]] = []
    for name, value in headers.items():
        for problem in (name_problem(name), value_problem(value)):
            if problem is not None:
                problems.append((name, problem))
    return problems
