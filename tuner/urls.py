"""Storage URLs with their secrets masked, for every line printed and every file written.

A URL's secrets come in three forms: ``user:password@host``, a password holding a raw ``@``
(``user:p@ss@host``: everything up to the last ``@`` before the host is the user part), and
query parameters (``?password=...``, ``?sslkey=...``: any parameter whose name contains pass,
secret, token or key). Masking errs on the side of hiding: a part that might be a secret is.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
_SECRET_PARAM = re.compile(r"pass|secret|token|key", re.IGNORECASE)
# What may follow the user part's "@": host names, IPv4/IPv6 addresses, ports, several hosts.
_HOST = re.compile(r"[A-Za-z0-9._~%\-,]*(?:\[[0-9A-Fa-f:.%A-Za-z]*\])?(?::\d*)?(?:[,/?#]|$)")


def _split(url: str) -> tuple[str, str, str, str]:
    """(scheme with '://', user part or '', rest up to the query, query with '?' or '')."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    userinfo = ""
    if scheme and not scheme.startswith("sqlite"):  # SQLite's "@" is part of a file name
        ats = [at for at in (m.start() for m in re.finditer("@", rest))
               if _HOST.match(rest, at + 1)]
        # An "@" before the query ends the user part; a query's own "@" (application_name=a@b)
        # counts only when there is none before it (a password holding a raw "?").
        before = [at for at in ats if "?" not in rest[:at]]
        if ats:
            at = (before or ats)[-1]
            userinfo, rest = rest[:at + 1], rest[at + 1:]
    path, qmark, query = rest.partition("?")
    return scheme, userinfo, path, qmark + query


def _secrets(url: str) -> list[str]:
    _, userinfo, _, query = _split(url)
    found = []
    if ":" in userinfo:
        found.append(userinfo[:-1].split(":", 1)[1])
    for param in re.split(r"[&;]", query[1:]):
        name, eq, value = param.partition("=")
        if eq and value and _SECRET_PARAM.search(unquote(name)):
            found.append(value)
    return [s for s in found if s]


def mask_url(url: str) -> str:
    """``url`` with the password of its user part and every secret-named query value
    replaced by ``***``; anything else unchanged."""
    scheme, userinfo, path, query = _split(url)
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + MASK + "@"
    if query:
        params = re.split(r"([&;])", query[1:])
        for i in range(0, len(params), 2):
            name, eq, value = params[i].partition("=")
            if eq and _SECRET_PARAM.search(unquote(name)):
                params[i] = f"{name}={MASK}"
        query = "?" + "".join(params)
    return scheme + userinfo + path + query


def mask_secret(text: str, url: str) -> str:
    """``text`` with ``url`` masked and each of its secrets, in any spelling (raw, percent-encoded
    or decoded), replaced by ``***``: driver error messages may quote parts of a connection
    string."""
    text = text.replace(url, mask_url(url))
    for secret in _secrets(url):
        for spelling in sorted({secret, unquote(secret), quote(unquote(secret), safe="")},
                               key=len, reverse=True):
            if spelling:
                text = text.replace(spelling, MASK)
    return text
