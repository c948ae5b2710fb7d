"""Where the database is, from the Worker's environment.

`DATABASE_URL` is the pooled endpoint's connection string, a secret (`wrangler secret
put DATABASE_URL`, or `.dev.vars` locally). `DATABASE_HTTP_ENDPOINT` ([vars]) overrides
the HTTP endpoint; without it the endpoint is derived as Neon's driver derives it:
the host's first label replaced by `api`, so `ep-x.eu.aws.neon.tech` posts to
`https://api.eu.aws.neon.tech/sql`.

`DATABASE_API_KEY` (a secret) is sent as `Authorization: Bearer` to a poolgate started
with `--api-keys`; Neon's hosted endpoint needs none.

A deployed Worker's `fetch()` ignores a custom port (`https://gw.example.com:4444` is
sent to 443; cloudflare/workers-sdk#1320), while `wrangler dev` honours it: so an
endpoint on any port but 443 (https) or 80 (http) is refused unless `LOCAL_DEVELOPMENT`
is `true`, which only `.dev.vars` (never deployed) sets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 10.0


class ConfigurationError(ValueError):
    """Raised when the Worker's database settings are missing or malformed."""


STANDARD_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    connection_string: str
    endpoint: str
    timeout: float = DEFAULT_TIMEOUT
    api_key: str | None = None

    def __repr__(self) -> str:  # the connection string holds a password
        return f"DatabaseConfig(endpoint={self.endpoint!r}, timeout={self.timeout})"

    @classmethod
    def from_env(cls, env: Mapping[str, str | None]) -> DatabaseConfig:
        url = env.get("DATABASE_URL")
        if not url:
            raise ConfigurationError(
                "DATABASE_URL is not set: `wrangler secret put DATABASE_URL`, or .dev.vars "
                "locally (see .dev.vars.example)"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ConfigurationError("DATABASE_URL must be a postgresql://user:pass@host/db URL")
        endpoint = env.get("DATABASE_HTTP_ENDPOINT") or derive_endpoint(parts.hostname)
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigurationError("DATABASE_HTTP_ENDPOINT must be an http(s):// URL")
        if env.get("LOCAL_DEVELOPMENT") != "true":
            _require_standard_port(endpoint)
        timeout_text = env.get("DATABASE_TIMEOUT_SECONDS")
        try:
            timeout = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT
        except ValueError:
            raise ConfigurationError("DATABASE_TIMEOUT_SECONDS must be a number") from None
        if not 0 < timeout <= 300:
            raise ConfigurationError("DATABASE_TIMEOUT_SECONDS must be between 0 and 300")
        api_key = env.get("DATABASE_API_KEY") or None
        return cls(connection_string=url, endpoint=endpoint, timeout=timeout, api_key=api_key)


def _require_standard_port(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError("DATABASE_HTTP_ENDPOINT has a malformed port") from None
    standard = STANDARD_PORTS[parts.scheme]
    if port is not None and port != standard:
        raise ConfigurationError(
            f"DATABASE_HTTP_ENDPOINT uses port {port}, but a deployed Worker's fetch() ignores"
            f" custom ports and would call port {standard} instead: serve the endpoint on"
            f" {parts.scheme}://{parts.hostname}/ (port {standard}), e.g. behind TLS on 443."
            " Locally (.dev.vars sets LOCAL_DEVELOPMENT=true) any port works"
        )


def derive_endpoint(host: str) -> str:
    return f"https://{re.sub(r'^[^.]+[.]', 'api.', host)}/sql"
