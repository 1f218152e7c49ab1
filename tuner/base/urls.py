"""Storage URLs with their secrets masked, for every line printed and every file written: the one
place that knows how a URL can carry a secret.

A URL's secrets come in these forms, each masked in any spelling a user may type or a driver may
accept:

- ``user:password@host``: after a scheme with ``://``, a scheme with one slash or none
  (``postgresql:/u:pw@db/x``), a scheme missing its colon (``postgresql//u:pw@db/x``) or no
  scheme at all (``u:pw@db/x``); a password holding a raw ``@``, ``/`` or ``?`` (everything up to
  the last ``@`` that a host follows is the user part); a host with any port text (``db:abc``)
  or unusual characters (``db+1``); several hosts (``h1,h2``);
- an empty user with a password, as SQLCipher keys are written
  (``sqlite+pysqlcipher://:key@/x.db``);
- query parameters (``?password=...``, ``sslpassword=``, ``sslkey=``, ``token=``): any
  parameter whose name contains pass, pwd, secret, token, key, auth or credential.

A SQLite URL's path (``sqlite:///dir/a@b.db``, three slashes: no host part) is a file name, not a
user part. Masking errs on the side of hiding: a part that might be a secret is.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
# "scheme:" (RFC 3986 letters), or a scheme that lost its colon before "//"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*(?::|(?=//))")
# What may follow the user part's "@": anything up to the path, query or fragment (host names,
# addresses, ports of any spelling, several hosts), but no further "@"
_HOST = re.compile(r"[^/?#@\s]*(?:[/?#]|$)")


def _split(url: str) -> tuple[str, str, str, str]:
    """(scheme and slashes, user part with its '@' or '', rest up to the query, query with its
    '?' or '')."""
    match = _SCHEME.match(url)
    head = match.group() if match else ""
    rest = url[len(head):]
    slashes = len(rest) - len(rest.lstrip("/"))
    if slashes >= 3 or (slashes == 0 and head.lower().startswith("sqlite")):
        # an empty host part (sqlite:///path): what follows is a path, whose "@" is a file
        # name's (a SQLite URL always has one; "sqlite:x@y" is a relative file name)
        path, qmark, query = _query(rest)
        return head + path, "", "", qmark + query
    if slashes == 0 and head:
        # "u:pw@db/x" reads as scheme "u"; take the reading that finds a password
        plain = _user_part(url)
        if ":" in plain[1] and ":" not in _user_part(rest)[1]:
            return plain
    return (head + rest[:slashes], *_user_part(rest[slashes:])[1:])


def _user_part(rest: str) -> tuple[str, str, str, str]:
    """``_split`` of what follows the scheme and its slashes ("" for the scheme)."""
    userinfo = ""
    ats = [m.start() for m in re.finditer("@", rest) if _HOST.match(rest, m.start() + 1)]
    # an "@" before the query ends the user part; a query's own "@" (application_name=a@b)
    # counts only when there is none before it (a password holding a raw "?")
    before = [at for at in ats if "?" not in rest[:at]]
    if ats:
        at = (before or ats)[-1]
        userinfo, rest = rest[:at + 1], rest[at + 1:]
    path, qmark, query = _query(rest)
    return "", userinfo, path, qmark + query


def _query(rest: str) -> tuple[str, str, str]:
    """(path, separator, query): the query starts at the first "?", else at the first ";"."""
    path, qmark, query = rest.partition("?")
    if not qmark:
        path, qmark, query = rest.partition(";")
    return path, qmark, query


def _query_secrets(query: str) -> list[tuple[int, str, str]]:
    """(index, name, value) of each secret-named parameter of ``query`` (without its '?'),
    split on & and ;."""
    out = []
    for i, param in enumerate(re.split(r"[&;]", query)):
        name, eq, value = param.partition("=")
        if eq and _SECRET_PARAM.search(unquote(name)):
            out.append((i, name, value))
    return out


def _secrets(url: str) -> list[str]:
    head, userinfo, path, query = _split(url)
    found = []
    if ":" in userinfo:
        found.append(userinfo[:-1].split(":", 1)[1])
    found += [value for _, _, value in _query_secrets(query[1:])]
    return [s for s in found if s]


def _mask_query(query: str) -> str:
    params = re.split(r"([&;])", query)
    for i, name, _ in _query_secrets(query):
        params[2 * i] = f"{name}={MASK}"
    return "".join(params)


def mask_url(url: str) -> str:
    """``url`` with the password of its user part and every secret-named query value
    replaced by ``***``; anything else unchanged."""
    head, userinfo, path, query = _split(url)
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + MASK + "@"
    if query:
        query = query[0] + _mask_query(query[1:])
    return head + userinfo + path + query


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


def masked(url: str) -> str:
    """A storage URL for a message, unquoted: secrets masked, control characters escaped, cut
    short."""
    from tuner.base import render  # render imports nothing of tuner: no cycle

    text = render.plain(mask_url(url))
    return text if len(text) <= 160 else text[:150] + "..."


def shown(url: object) -> str:
    """A storage URL for a message: secrets masked, control characters escaped, quoted the way
    ``repr`` would and cut short; something that is not a string is named by its type."""
    return repr(masked(url) if isinstance(url, str) else type(url).__name__)
