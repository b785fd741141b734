"""Keep secrets out of logs, metrics and error texts.

Every secret the exporter reads (DSN passwords, auth headers, basic-auth passwords) is
registered here when it is loaded; `redact` replaces any registered secret, any password
embedded in a URI and any URL query string before a text is logged or shown.
"""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_URI_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
# a URL's query string may carry a token (?token=, ?api_key=, signed URLs): never shown
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*", re.I)
REDACTED = "<redacted>"


def register_secret(value: str) -> None:
    if value and len(value) >= 3:  # shorter strings would redact ordinary words
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    text = _URL_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    text = _URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, REDACTED)
    return text


# key names whose values are or may be secrets (also misspelt: "pasword", "passwd", "pwd");
# config errors never echo a value under such a key
SECRET_KEY_RE = re.compile(
    r"pass|pas+w|pwd|pw$|token|secret|key|auth|cookie|session|cred|dsn|bearer|private|signature",
    re.I,
)
_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I)


def looks_secret(key: str) -> bool:
    return bool(SECRET_KEY_RE.search(key))


def safe_url(url: str) -> str:
    """scheme://host:port/path of a URL: no credentials, no query string, no fragment."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def scrub_urls(text: str) -> str:
    """Every URL in a text reduced to safe_url (credentials and query strings removed)."""
    return _URL_RE.sub(lambda m: safe_url(m.group(0)), text)
