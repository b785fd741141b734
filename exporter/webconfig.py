"""`--web.config.file`: TLS and basic auth for the HTTP server, in the Prometheus
exporter-toolkit format (docs/security.md), so one file works for this exporter and the
Prometheus ones.

    tls_server_config: {cert_file, key_file, client_auth_type, client_ca_file,
                        min_version, max_version}
    http_server_config: {headers: {Strict-Transport-Security: ..., ...}}
    basic_auth_users: {user: <bcrypt hash>}

Relative file names are resolved against the web config's directory, as the toolkit does.
Settings the toolkit has and this server cannot honour (cipher suites, curves, allowed SANs,
rate limits, inline certificates) are refused with a clear error rather than ignored: silently
dropping a restriction someone wrote down is worse than refusing to start.

Like the toolkit, the file (and the certificate files it names) is reread when it changes:
`WebConfigSource.current()` checks modification times, at most every `recheck` seconds. A
broken new version keeps the previous one in force and logs why. Error messages name file and
field, never a value that may be secret (hashes, keys).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from exporter import configyaml
from exporter.config import ConfigError

log = logging.getLogger("exporter.web")

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's tls.ClientAuthType names. Python's ssl module verifies every certificate it asks for,
# so Go's "request but do not verify" modes cannot be offered; they are refused, not weakened.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",  # accepted: OpenSSL picks by server preference anyway
}
TLS_UNSUPPORTED = {"cert", "key", "client_ca", "cipher_suites", "curve_preferences",
                   "client_allowed_sans"}  # fmt: skip
ALLOWED_HEADERS = {
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
}
BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
# a well-formed hash no password matches: unknown users cost a bcrypt round like known ones,
# so response times do not tell which user names exist
_DUMMY_HASH = bcrypt.hashpw(b"no user has this password", bcrypt.gensalt(10))


class WebConfigError(ConfigError):
    """A problem in the web config file; names file and field, never a secret. Exit code 2."""


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: tuple[tuple[bytes, bytes], ...] = ()
    files: tuple[Path, ...] = ()  # the certificate files it names: a change to one reloads

    @property
    def auth_required(self) -> bool:
        return bool(self.users)


def _err(path: Path, where: str, problem: str) -> WebConfigError:
    return WebConfigError(f"{path}: {where}: {problem}")


def _mapping(value: object, path: Path, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, where, f"must be a mapping, got {type(value).__name__}")
    return value


def _string(value: object, path: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _err(path, where, "must be a non-empty string")
    return value


def _file(section: dict, key: str, base: Path, path: Path, where: str) -> Path:
    name = Path(_string(section[key], path, f"{where}.{key}"))
    full = name if name.is_absolute() else base / name
    if not full.is_file() or not os.access(full, os.R_OK):
        raise _err(path, f"{where}.{key}", f"cannot read file {str(full)!r}")
    return full


def referenced_files(data: dict, base: Path) -> list[Path]:
    """The certificate files a parsed web config names: a change to any of them reloads."""
    tls = data.get("tls_server_config") if isinstance(data, dict) else None
    if not isinstance(tls, dict):
        return []
    return [
        (Path(v) if Path(v).is_absolute() else base / v)
        for k in ("cert_file", "key_file", "client_ca_file")
        if isinstance(v := tls.get(k), str) and v
    ]


def _tls_context(tls: dict, base: Path, path: Path) -> ssl.SSLContext:
    where = "tls_server_config"
    for key in tls:
        if key in TLS_UNSUPPORTED:
            raise _err(path, f"{where}.{key}", "not supported by runbook-exporter")
        if key not in TLS_KEYS:
            raise _err(path, f"{where}.{key}", "unknown key")
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            raise _err(path, where, f"missing {key}")
    cert = _file(tls, "cert_file", base, path, where)
    key = _file(tls, "key_file", base, path, where)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = tls.get(name, default)
        if v not in TLS_VERSIONS:
            raise _err(path, f"{where}.{name}", f"must be one of {', '.join(TLS_VERSIONS)}")
        versions[name] = TLS_VERSIONS[v]
    if versions["min_version"] > versions["max_version"]:
        raise _err(path, where, "min_version is above max_version")
    ctx.minimum_version, ctx.maximum_version = versions["min_version"], versions["max_version"]
    try:
        # an empty password: OpenSSL would otherwise prompt on the terminal for an encrypted key
        ctx.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError, ValueError) as e:
        # the reason, never the file's content (it holds the private key)
        raise _err(
            path,
            f"{where}.cert_file/key_file",
            f"cannot load: {e.strerror or e} (not PEM, an encrypted key, or a key that does not "
            "match the certificate)",
        ) from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth in UNSUPPORTED_CLIENT_AUTH:
        raise _err(
            path,
            f"{where}.client_auth_type",
            f"{auth} is not supported (Python's ssl verifies every client certificate it "
            "requests): use RequireAndVerifyClientCert or VerifyClientCertIfGiven",
        )
    if auth not in CLIENT_AUTH:
        raise _err(path, f"{where}.client_auth_type", f"must be one of {', '.join(CLIENT_AUTH)}")
    ctx.verify_mode = CLIENT_AUTH[auth]
    if tls.get("client_ca_file"):
        if auth == "NoClientCert":
            # as the toolkit: a CA without a policy that uses it is a mistake, not a default
            raise _err(path, where, "client_ca_file is set but client_auth_type is NoClientCert")
        ca = _file(tls, "client_ca_file", base, path, where)
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as e:
            raise _err(path, f"{where}.client_ca_file", f"cannot load: {e}") from None
    elif ctx.verify_mode != ssl.CERT_NONE:
        raise _err(path, f"{where}.client_ca_file", f"required with client_auth_type {auth}")
    return ctx


def _users(value: object, path: Path) -> dict[str, bytes]:
    users = {}
    for user, hashed in _mapping(value, path, "basic_auth_users").items():
        where = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            raise _err(path, "basic_auth_users", "user names must be strings without ':'")
        if not isinstance(hashed, str):
            raise _err(path, where, "must be a bcrypt hash (a string)")
        h = hashed.encode()
        if not (h.startswith(BCRYPT_PREFIXES) and len(h) == 60):
            # the value is not echoed: someone may have pasted a plain password here
            raise _err(path, where, "not a bcrypt hash (expected $2y$/$2b$/$2a$..., 60 chars)")
        users[user] = h
    return users


def _headers(http: dict, path: Path) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for key in http:
        if key not in ("headers", "http2"):
            raise _err(path, f"http_server_config.{key}", "unknown key")
    for name, value in _mapping(http.get("headers"), path, "http_server_config.headers").items():
        if name not in ALLOWED_HEADERS:
            raise _err(
                path,
                f"http_server_config.headers.{name}",
                f"not one of {', '.join(sorted(ALLOWED_HEADERS))}",
            )
        if value in (None, ""):
            continue  # "unset if blank", as the toolkit
        text = _string(str(value), path, f"http_server_config.headers.{name}")
        if "\r" in text or "\n" in text:
            raise _err(path, f"http_server_config.headers.{name}", "must be one line")
        out.append((name.encode(), text.encode("latin-1", "replace")))
    return tuple(out)


def parse_web_config(text: str, path: Path) -> WebConfig:
    # the configuration's own YAML reader: duplicate keys, alias bombs and deep nesting are
    # located errors here too, and no message quotes the file's content
    try:
        data, _ = configyaml.load(text)
    except configyaml.YAMLProblem as e:
        raise WebConfigError(e.located(str(path))) from None
    data = _mapping(data, path, "top level")
    for key in data:
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users"):
            hint = " (not supported by runbook-exporter)" if key == "rate_limit" else ""
            raise _err(path, str(key), f"unknown key{hint}")
    base = path.parent
    tls = _mapping(data.get("tls_server_config"), path, "tls_server_config")
    http = _mapping(data.get("http_server_config"), path, "http_server_config")
    return WebConfig(
        tls=_tls_context(tls, base, path) if tls else None,
        users=_users(data.get("basic_auth_users"), path),
        headers=_headers(http, path),
        files=tuple(referenced_files(data, base)),
    )


def load_web_config(path: str | Path) -> WebConfig:
    p = Path(path)
    try:
        text = configyaml.read(p)
    except OSError as e:
        raise WebConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    except configyaml.YAMLProblem as e:
        raise WebConfigError(e.located(str(p))) from None
    return parse_web_config(text, p)


def _stamp(paths: list[Path]) -> tuple:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class WebConfigSource:
    """The web config in force, reread when its file or a certificate file changes.

    Without a file (path None) it serves an empty config: no TLS, no auth.
    """

    def __init__(self, path: str | Path | None, recheck: float = 0.5) -> None:
        self.path = Path(path) if path else None
        self.recheck = recheck
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._files: list[Path] = []
        self._stamp: tuple = ()
        self._config = WebConfig()
        if self.path is not None:
            self._config = load_web_config(self.path)  # at start an error is fatal (exit 2)
            self._files = [self.path, *self._config.files]
            self._stamp = _stamp(self._files)

    def current(self) -> WebConfig:
        if self.path is None:
            return self._config
        now = time.monotonic()
        if now - self._checked_at < self.recheck:
            return self._config
        with self._lock:
            self._checked_at = now
            stamp = _stamp(self._files)
            if stamp == self._stamp:
                return self._config
            self._stamp = stamp
            try:
                config = load_web_config(self.path)
            except WebConfigError as e:
                log.error(
                    "web config reload failed, keeping the previous one", extra={"error": str(e)}
                )
                return self._config
            self._config = config
            self._files = [self.path, *config.files]
            self._stamp = _stamp(self._files)
            log.info("web config reloaded", extra={"file": str(self.path)})
            return config


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes, remembering verified
    (user, password, hash) triples so a scrape does not pay a bcrypt round (tens of ms) each
    time. The key holds a SHA-256 of the password, never the password itself."""

    def __init__(self, size: int = 256) -> None:
        # verdicts kept apart: a flood of wrong passwords must not evict the right ones
        self._ok: OrderedDict[tuple[str, bytes, bytes], None] = OrderedDict()
        self._bad: OrderedDict[tuple[str, bytes, bytes], None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @staticmethod
    def credentials(header: bytes | None) -> tuple[str, bytes] | None:
        if not header:
            return None
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = raw.partition(b":")
        if not sep:
            return None
        return user.decode("utf-8", "replace"), password

    @staticmethod
    def _key(config: WebConfig, user: str, password: bytes) -> tuple[str, bytes, bytes]:
        return (user, hashlib.sha256(password).digest(), config.users.get(user, _DUMMY_HASH))

    def cached(self, config: WebConfig, user: str, password: bytes) -> bool | None:
        """The remembered verdict, or None when a bcrypt check is needed."""
        key = self._key(config, user, password)
        with self._lock:
            for verdict, cache in ((True, self._ok), (False, self._bad)):
                if key in cache:
                    cache.move_to_end(key)
                    return verdict
        return None

    def verify(self, config: WebConfig, user: str, password: bytes) -> bool:
        """The slow path: one bcrypt round (run it off the event loop)."""
        key = self._key(config, user, password)
        try:
            ok = bcrypt.checkpw(password, key[2]) and user in config.users
        except ValueError:
            ok = False
        with self._lock:
            cache = self._ok if ok else self._bad
            cache[key] = None
            while len(cache) > self._size:
                cache.popitem(last=False)
        return ok
