"""Secrets in URLs kept out of answers and logs: the password of a URL's userinfo (a webhook
URL, the store URL) and a `password=` query parameter become `***`. Pure; never raises, so it
can stand between any text and its reader."""

from __future__ import annotations

import re

# `scheme://user:password@` anywhere in a text: the password runs to the authority's last `@`.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/?#@\s:]*:)[^/?#\s]*@")
_PASSWORD_PARAMETER = re.compile(r"(?i)([?&]password=)[^&#\s]*")


def masked_url(url: str) -> str:
    """`url` fit for an answer or a log line: `https://user:***@host/`, `...&password=***`."""
    return mask_urls_in(url)


def mask_urls_in(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    if "://" not in text and "password=" not in text.lower():  # the common case, at C speed
        return text
    return _PASSWORD_PARAMETER.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
