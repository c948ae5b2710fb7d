"""`--accelerate-keys-file`: which API key opens which database, as whom.

One key per line, `KEY postgresql://USER:PASSWORD@/DATABASE [model-invalidation=off]`
(blank lines and `#` comments skipped). The URL names no host: the database is reached
through `--upstream`, as for `/sql`. A plan carries SQL, so the key is the whole
boundary: the credentials come from this file, never from the client.

An offered key is found by its digest (a dict lookup on SHA-256), so the time taken
does not depend on how much of a stored key it shares.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

MIN_KEY_LENGTH = 16
MODEL_INVALIDATION_OFF = "model-invalidation=off"


class KeysFileError(ValueError):
    """The file cannot be used; the message says which line and why."""


@dataclass(frozen=True, slots=True)
class Tenant:
    """What one Accelerate key opens."""

    user: str
    password: str = field(repr=False)
    database: str
    model_invalidation: bool = True  # writes drop cached reads of the tables they write

    def connection_string(self) -> str:
        """For the companion's Neon Pool: its sessions reach the workers' private sockets
        whatever the host says."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@poolgate.internal/{quote(self.database, safe='')}"
        )


@dataclass(frozen=True, slots=True)
class AccelerateKeys:
    by_digest: dict[bytes, Tenant] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.by_digest)

    def tenant(self, offered: str | None) -> Tenant | None:
        if not offered:
            return None
        return self.by_digest.get(_digest(offered))

    def holds(self, key: str) -> bool:
        return _digest(key) in self.by_digest


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_keys_file(text: str) -> AccelerateKeys:
    found: dict[bytes, Tenant] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"line {number}"
        if len(words) not in (2, 3) or (len(words) == 3 and words[2] != MODEL_INVALIDATION_OFF):
            raise KeysFileError(
                f"{where}: expected `KEY postgresql://USER:PASSWORD@/DATABASE"
                f" [{MODEL_INVALIDATION_OFF}]`"
            )
        key, url = words[0], words[1]
        if len(key) < MIN_KEY_LENGTH or not all("!" <= ch <= "~" for ch in key):
            raise KeysFileError(
                f"{where}: a key must be at least {MIN_KEY_LENGTH} printable ASCII characters"
                " (e.g. from `openssl rand -hex 32`)"
            )
        digest = _digest(key)
        if digest in found:
            raise KeysFileError(f"{where}: this key is listed twice")
        found[digest] = Tenant(*_credentials(url, where), model_invalidation=len(words) == 2)
    return AccelerateKeys(found)


def _credentials(url: str, where: str) -> tuple[str, str, str]:
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
        host = parts.hostname
    except ValueError as exc:
        raise KeysFileError(f"{where}: not a valid URL: {exc}") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise KeysFileError(f"{where}: the URL must be postgresql://USER:PASSWORD@/DATABASE")
    if host or parts.port:
        raise KeysFileError(
            f"{where}: leave the host out (postgresql://USER:PASSWORD@/DATABASE):"
            " the database is reached through --upstream"
        )
    database = unquote(parts.path.lstrip("/"))
    if not user or password is None or not database or parts.query:
        raise KeysFileError(
            f"{where}: the URL must name a user, a password and a database, and nothing else"
        )
    return unquote(user), unquote(password), database
