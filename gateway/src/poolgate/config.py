"""Gateway settings: from command-line options, each also settable from the environment.

Every value is validated once, at start-up, with a message that says what is wrong and
what is expected; nothing downstream re-checks them.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import ssl

    from poolgate.faces.accelerate.keys import AccelerateKeys

MiB = 1024 * 1024
# Postgres cancels a statement at --statement-timeout itself; the gateway's own deadline
# comes this much later and covers a server that has stopped answering altogether.
DEADLINE_GRACE_SECONDS = 1.0


class ConfigError(ValueError):
    """Raised when a setting is invalid; the message names the setting and what it expects."""


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: dict[str, str]  # libpq keywords: where Postgres is, never who to log in as
    listen_host: str = "127.0.0.1"
    listen_port: int = 4444
    pool_size: int = 10
    max_connections: int = 100
    acquire_timeout: float = 5.0
    connect_timeout: float = 5.0
    statement_timeout: float = 15.0
    transaction_timeout_max: float = 15.0  # longest timeout a client may ask a transaction
    body_timeout: float = 10.0
    max_request_bytes: int = 10 * MiB
    max_response_bytes: int = 10 * MiB
    idle_timeout: float = 300.0
    auth_recheck: float = 60.0  # an accepted password is trusted this long, then logs in again
    ws_idle_timeout: float = 300.0  # a WebSocket session with nothing to do is ended after it
    drain_seconds: float = 10.0  # after SIGTERM: keep serving, /readyz 503, then stop
    reset_query: str = "DISCARD ALL"
    reset_always: bool = False  # else only after statements that may change the session
    cache: str = "memory"  # "memory", "off", or a redis:// URL shared by replicas
    cache_max_bytes: int = 64 * MiB
    api_keys: tuple[str, ...] = ()  # when set, every call must carry one (see api_keys)
    tls_cert: str | None = None  # PEM certificate chain: with tls_key, serve HTTPS
    tls_key: str | None = None
    workers: int = 1  # processes sharing the port; pool_size and max_connections are split
    accelerate_keys: AccelerateKeys | None = None  # Prisma Accelerate's face, when set
    accelerate_node: str = "node"  # the Node.js that runs its companion
    accelerate_node_modules: str = ""  # where the companion's packages are
    advertise_url: str | None = None  # where other replicas reach this one (see replicas)

    @property
    def request_deadline(self) -> float:
        """Seconds from a request's arrival to its answer, at most, whatever fails: the
        wait for a connection, connecting and running all count against it."""
        return self.statement_timeout + DEADLINE_GRACE_SECONDS

    def for_worker(self, index: int) -> Settings:
        """This worker's share of the connection bounds: the bounds hold for all together."""
        return replace(
            self,
            pool_size=share(self.pool_size, self.workers, index),
            max_connections=share(self.max_connections, self.workers, index),
        )

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"Settings(listen={self.listen_host}:{self.listen_port}, keys={len(self.api_keys)})"


# (option, environment variable, help)
_OPTIONS = (
    (
        "--upstream",
        "POOLGATE_UPSTREAM",
        "PostgreSQL server to pool, as postgresql://host:port (or ?host=/socket/dir); "
        "no user or password: clients bring their own",
    ),
    ("--listen", "POOLGATE_LISTEN", "address to serve HTTP on, host:port (default 127.0.0.1:4444)"),
    (
        "--pool-size",
        "POOLGATE_POOL_SIZE",
        "most server connections per (user, database) pair (default 10)",
    ),
    (
        "--max-connections",
        "POOLGATE_MAX_CONNECTIONS",
        "most server connections of all pools together; idle ones of other pools are"
        " closed to make room (default 100)",
    ),
    (
        "--acquire-timeout",
        "POOLGATE_ACQUIRE_TIMEOUT",
        "seconds a request may wait for a pooled connection before 503 (default 5)",
    ),
    (
        "--connect-timeout",
        "POOLGATE_CONNECT_TIMEOUT",
        "seconds to open one upstream connection (default 5)",
    ),
    (
        "--statement-timeout",
        "POOLGATE_STATEMENT_TIMEOUT",
        "seconds one statement may run before Postgres cancels it (default 15)",
    ),
    (
        "--body-timeout",
        "POOLGATE_BODY_TIMEOUT",
        "seconds a request body may take to arrive before 408 (default 10)",
    ),
    (
        "--max-request-bytes",
        "POOLGATE_MAX_REQUEST_BYTES",
        "largest accepted request body in bytes (default 10 MiB)",
    ),
    (
        "--max-response-bytes",
        "POOLGATE_MAX_RESPONSE_BYTES",
        "largest result in bytes before 507 (default 10 MiB)",
    ),
    (
        "--idle-timeout",
        "POOLGATE_IDLE_TIMEOUT",
        "seconds an unused connection (and a pool's credentials) is kept (default 300)",
    ),
    (
        "--auth-recheck",
        "POOLGATE_AUTH_RECHECK",
        "seconds a password Postgres accepted is trusted without logging in again; past"
        " it, the next request checks it with a real login (default 60)",
    ),
    (
        "--drain-seconds",
        "POOLGATE_DRAIN_SECONDS",
        "after SIGTERM, seconds to keep serving with /readyz answering 503 so that a load"
        " balancer moves away (new interactive transactions and WebSocket sessions are"
        " refused meanwhile); then running requests and transactions finish and it exits."
        " 0 stops at once; SIGINT never drains (default 10)",
    ),
    (
        "--ws-idle-timeout",
        "POOLGATE_WS_IDLE_TIMEOUT",
        "seconds a WebSocket session (Neon's Pool/Client) may send nothing while no answer is"
        " owed to it; then it is ended (57P05) and its server connection returned (default 300)",
    ),
    (
        "--transaction-timeout-max",
        "POOLGATE_TRANSACTION_TIMEOUT_MAX",
        "longest life in seconds a client may ask for an interactive transaction "
        "(POST /transaction; default 15): past it, the gateway rolls it back",
    ),
    (
        "--reset-query",
        "POOLGATE_RESET_QUERY",
        "SQL run on a connection before it is reused by the next request, so no session "
        "state leaks between requests (default 'DISCARD ALL'; 'none' to skip)",
    ),
    (
        "--reset",
        "POOLGATE_RESET",
        "when the reset query runs: auto (default: after statements that may change the "
        "session, see session_state) or always (after every request)",
    ),
    (
        "--cache",
        "POOLGATE_CACHE",
        "query cache: memory (default, in this process), off, or redis://host:port/db to "
        "share entries and invalidations between replicas",
    ),
    (
        "--cache-max-bytes",
        "POOLGATE_CACHE_MAX_BYTES",
        "bound of the in-process cache in bytes (default 64 MiB)",
    ),
    (
        "--api-keys",
        "POOLGATE_API_KEYS",
        "comma-separated API keys; when set, /sql, /invalidate and /metrics need "
        "'Authorization: Bearer <key>' (list two keys to rotate)",
    ),
    (
        "--api-keys-file",
        "POOLGATE_API_KEYS_FILE",
        "a file with one API key per line (blank lines and # comments skipped)",
    ),
    (
        "--tls-cert",
        "POOLGATE_TLS_CERT",
        "PEM certificate chain: serve HTTPS (TLS 1.2 or later) instead of plain HTTP",
    ),
    ("--tls-key", "POOLGATE_TLS_KEY", "PEM private key of --tls-cert"),
    (
        "--workers",
        "POOLGATE_WORKERS",
        "processes serving the port together (SO_REUSEPORT; default: the CPUs this process "
        "may use, at most --pool-size); --pool-size and --max-connections are split between "
        "them, so the bounds hold for the gateway as a whole",
    ),
    (
        "--advertise-url",
        "POOLGATE_ADVERTISE_URL",
        "this replica's own address as its other replicas can reach it (http(s)://host:port,"
        " not the load balancer's): with --cache redis://..., replicas register there and"
        " forward a call on an interactive transaction to the replica holding it",
    ),
)
MIN_API_KEY_LENGTH = 16
_ACCELERATE_OPTIONS = (
    (
        "--accelerate-keys-file",
        "POOLGATE_ACCELERATE_KEYS_FILE",
        "serve Prisma Accelerate's protocol too: a file with one line per API key,"
        " `KEY postgresql://USER:PASSWORD@/DATABASE [model-invalidation=off]` (see"
        " faces/accelerate); needs Node.js for its companion process",
    ),
    (
        "--accelerate-node",
        "POOLGATE_ACCELERATE_NODE",
        "the Node.js (20 or later) that runs the Accelerate companion (default: node on PATH)",
    ),
    (
        "--accelerate-node-modules",
        "POOLGATE_ACCELERATE_NODE_MODULES",
        "the node_modules folder holding the companion's packages (@prisma/client-engine-runtime,"
        " @prisma/adapter-neon, @neondatabase/serverless, ws; default: the nearest one above"
        " the poolgate package)",
    ),
)
COMPANION_PACKAGES = (
    "@prisma/client-engine-runtime",
    "@prisma/adapter-neon",
    "@neondatabase/serverless",
    "ws",
)


def parse_settings(
    argv: Sequence[str], environ: Mapping[str, str] | None = None, *, check_upstream: bool = True
) -> Settings:
    """Settings from `argv` (options after `serve`), falling back to the environment.

    `check_upstream=False` leaves `upstream` empty after a first look at it (the
    supervisor of `--workers` refuses credentials in it first; its workers check the
    rest)."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="poolgate serve", exit_on_error=False)
    for option, variable, help_text in (*_OPTIONS, *_ACCELERATE_OPTIONS):
        parser.add_argument(option, default=env.get(variable), help=f"{help_text} [{variable}]")
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        raise ConfigError(str(exc)) from exc
    if unknown:
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown)}")
    if args.upstream is None:
        raise ConfigError(
            "--upstream is required (or POOLGATE_UPSTREAM): the PostgreSQL server to pool, "
            "e.g. postgresql://127.0.0.1:5432"
        )
    host, port = parse_listen(args.listen or "127.0.0.1:4444")
    reset = args.reset_query if args.reset_query is not None else "DISCARD ALL"
    settings = Settings(
        upstream=parse_upstream(args.upstream)
        if check_upstream
        else _looks_like_url(args.upstream),
        listen_host=host,
        listen_port=port,
        pool_size=_positive_int("--pool-size", args.pool_size, 10),
        max_connections=_positive_int("--max-connections", args.max_connections, 100),
        acquire_timeout=_positive_seconds("--acquire-timeout", args.acquire_timeout, 5.0),
        connect_timeout=_positive_seconds("--connect-timeout", args.connect_timeout, 5.0),
        statement_timeout=_positive_seconds("--statement-timeout", args.statement_timeout, 15.0),
        transaction_timeout_max=_positive_seconds(
            "--transaction-timeout-max", args.transaction_timeout_max, 15.0
        ),
        body_timeout=_positive_seconds("--body-timeout", args.body_timeout, 10.0),
        max_request_bytes=_positive_int("--max-request-bytes", args.max_request_bytes, 10 * MiB),
        max_response_bytes=_positive_int("--max-response-bytes", args.max_response_bytes, 10 * MiB),
        idle_timeout=_positive_seconds("--idle-timeout", args.idle_timeout, 300.0),
        auth_recheck=_positive_seconds("--auth-recheck", args.auth_recheck, 60.0),
        ws_idle_timeout=_positive_seconds("--ws-idle-timeout", args.ws_idle_timeout, 300.0),
        drain_seconds=_seconds_or_zero("--drain-seconds", args.drain_seconds, 10.0),
        reset_query="" if reset.strip().lower() == "none" else reset,
        reset_always=parse_reset_mode(args.reset or "auto"),
        cache=parse_cache(args.cache or "memory"),
        cache_max_bytes=_positive_int("--cache-max-bytes", args.cache_max_bytes, 64 * MiB),
        api_keys=parse_api_keys(args.api_keys, args.api_keys_file),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    workers = _positive_int("--workers", args.workers, len(os.sched_getaffinity(0)))
    if args.workers is None:
        workers = min(workers, settings.pool_size, settings.max_connections)
    elif workers > min(settings.pool_size, settings.max_connections):
        raise ConfigError(
            f"--workers {workers} is more than --pool-size/--max-connections allow: every"
            " worker needs at least one connection of its own"
        )
    settings = _with_accelerate(replace(settings, workers=workers), args)
    accelerate_keys = settings.accelerate_keys
    if accelerate_keys is not None and any(map(accelerate_keys.holds, settings.api_keys)):
        raise ConfigError(
            "a key is listed both as an API key and in --accelerate-keys-file: each"
            " opens one face only, give them different keys"
        )
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither")
    if settings.tls_cert:
        server_tls_context(settings)  # a missing file or a key that does not match stops here
    if args.advertise_url is not None:
        settings = replace(
            settings, advertise_url=parse_advertise_url(args.advertise_url, settings)
        )
    return settings


def _with_accelerate(settings: Settings, args: argparse.Namespace) -> Settings:
    """Prisma Accelerate's face: its keys, and what runs its companion."""
    if not args.accelerate_keys_file:
        if args.accelerate_node or args.accelerate_node_modules:
            raise ConfigError(
                "--accelerate-node and --accelerate-node-modules need --accelerate-keys-file"
            )
        return settings
    from poolgate.faces.accelerate.keys import KeysFileError, parse_keys_file

    try:
        text = open(args.accelerate_keys_file, encoding="utf-8").read()  # noqa: SIM115
        keys = parse_keys_file(text)
    except OSError as exc:
        raise ConfigError(f"--accelerate-keys-file cannot be read: {exc.strerror}") from None
    except KeysFileError as exc:
        raise ConfigError(f"--accelerate-keys-file: {exc}") from None
    if not len(keys):
        raise ConfigError("--accelerate-keys-file lists no key")
    node = shutil.which(args.accelerate_node or "node")
    if node is None:
        raise ConfigError(
            f"--accelerate-node: {args.accelerate_node or 'node'!r} is not an executable;"
            " the Accelerate face runs Prisma's interpreter on Node.js"
        )
    modules = args.accelerate_node_modules or _nearest_node_modules()
    missing = [name for name in COMPANION_PACKAGES if not os.path.isdir(f"{modules}/{name}")]
    if not modules or missing:
        raise ConfigError(
            f"--accelerate-node-modules: {modules or 'no node_modules found'} lacks"
            f" {', '.join(missing or COMPANION_PACKAGES)} (npm install them there)"
        )
    return replace(
        settings,
        accelerate_keys=keys,
        accelerate_node=node,
        accelerate_node_modules=os.path.abspath(modules),
    )


def _nearest_node_modules() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    while True:
        candidate = os.path.join(here, "node_modules")
        if os.path.isdir(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return ""
        here = parent


def parse_advertise_url(value: str, settings: Settings) -> str:
    """`--advertise-url`: an origin (scheme, host, port) this replica serves, and a Redis
    shared with its other replicas: they find each other there, and a query cache in
    each process (--cache memory) would go on serving what another replica's write
    invalidated."""
    if not settings.cache.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"--advertise-url needs --cache redis://... (got --cache {settings.cache}): replicas"
            " find each other in the Redis they share, and a cache of each replica's own"
            " (memory) would not see the invalidations of the others' writes"
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--advertise-url is not a valid URL: {exc}") from None
    scheme = "https" if settings.tls_cert else "http"
    if parts.scheme != scheme:
        raise ConfigError(
            f"--advertise-url must be an {scheme}:// URL: this gateway serves "
            f"{'HTTPS (--tls-cert)' if settings.tls_cert else 'plain HTTP (no --tls-cert)'},"
            f" got {value!r}"
        )
    extra = parts.username or parts.password or parts.query or parts.fragment
    if not parts.hostname or port is None or parts.path not in ("", "/") or extra:
        raise ConfigError(
            f"--advertise-url must be {scheme}://host:port, nothing more, got {value!r}"
        )
    if parts.hostname in ("0.0.0.0", "::"):
        raise ConfigError(
            f"--advertise-url must name this host as the other replicas reach it, not the"
            f" wildcard {parts.hostname} (--listen may be one, --advertise-url may not)"
        )
    return f"{scheme}://{parts.netloc}"


def server_tls_context(settings: Settings) -> ssl.SSLContext:
    """HTTPS for the listener: TLS 1.2 or later, the ssl module's secure defaults."""
    import ssl  # here, not at import: the supervisor of --workers stays small

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--tls-cert/--tls-key cannot be used: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return context


def parse_api_keys(listed: str | None, file: str | None) -> tuple[str, ...]:
    keys = [key.strip() for key in (listed or "").split(",") if key.strip()]
    if file:
        try:
            lines = open(file, encoding="utf-8").read().splitlines()  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"--api-keys-file cannot be read: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for key in keys:
        if len(key) < MIN_API_KEY_LENGTH or not all("!" <= ch <= "~" for ch in key):
            raise ConfigError(
                f"an API key must be at least {MIN_API_KEY_LENGTH} printable ASCII characters"
                " without spaces (e.g. from `openssl rand -base64 32`)"
            )
    return tuple(dict.fromkeys(keys))


def parse_cache(value: str) -> str:
    if value in ("memory", "off") or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise ConfigError(f"--cache must be memory, off or a redis:// URL, got {value!r}")


def _looks_like_url(url: str) -> dict[str, str]:
    """What can be checked of `--upstream` at a first look: the scheme, and that it names
    no user, password or database (in the URL or its query). parse_upstream checks the
    rest; the supervisor of --workers has only this, and must refuse these before it
    looks at anything else (the port, say)."""
    if not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            f"--upstream must be a postgresql:// URL such as postgresql://127.0.0.1:5432, "
            f"got {url!r}"
        )
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        named = {
            "user": parts.username or query.get("user"),
            "password": parts.password or query.get("password"),
            "dbname": parts.path.lstrip("/") or query.get("dbname"),
        }
    except ValueError as exc:
        raise ConfigError(f"--upstream is not a valid PostgreSQL URL: {exc}") from exc
    _refuse_credentials(named)
    return {}


def _refuse_credentials(named: Mapping[str, object]) -> None:
    for forbidden in ("user", "password", "dbname"):
        if named.get(forbidden):
            raise ConfigError(
                f"--upstream must not name a {forbidden}: clients send their own in "
                "Neon-Connection-String; give only host and port"
            )


# The libpq keywords of --upstream the gateway's driver reads (poolgate.core.wire).
UPSTREAM_KEYWORDS = ("host", "port", "sslmode", "sslrootcert", "sslcert", "sslkey")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def parse_upstream(url: str) -> dict[str, str]:
    """libpq keywords for the upstream server, from a libpq URL: one host (a name, an
    address, `[v6]`, or a socket directory, percent-encoded or as `?host=`), a port, and
    the TLS keywords; credentials, the database and any other keyword are refused."""
    _looks_like_url(url)
    parts = urlsplit(url)
    hostspec = parts.netloc.rpartition("@")[2]
    if "," in hostspec:
        raise ConfigError("--upstream names several hosts: give one (a load balancer's)")
    host, port = _host_and_port(hostspec)
    params = {"host": unquote(host)} if host else {}
    if port:
        params["port"] = port
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in UPSTREAM_KEYWORDS:
            raise ConfigError(
                f"--upstream: {key!r} is not supported; the keywords read are"
                f" {', '.join(UPSTREAM_KEYWORDS)}"
            )
        params[key] = values[-1]
    params.setdefault("host", "localhost")
    if "," in params["host"]:
        raise ConfigError("--upstream names several hosts: give one (a load balancer's)")
    _int_in_range("--upstream port", params.get("port", "5432"), 1, 65535)
    if params.get("sslmode", "prefer") not in SSL_MODES:
        raise ConfigError(f"--upstream: sslmode must be one of {', '.join(SSL_MODES)}")
    return params


def _host_and_port(hostspec: str) -> tuple[str, str]:
    if hostspec.startswith("["):  # [v6] or [v6]:port
        address, _, rest = hostspec[1:].partition("]")
        return address, rest.removeprefix(":")
    host, _, port = hostspec.partition(":")
    return host, port


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split into `parts` as evenly as whole numbers allow."""
    return total // parts + (1 if index < total % parts else 0)


def parse_reset_mode(value: str) -> bool:
    """`--reset auto|always`: True for always."""
    if value not in ("auto", "always"):
        raise ConfigError(f"--reset must be auto or always, not {value!r}")
    return value == "always"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen must be host:port, such as 127.0.0.1:4444, got {value!r}")
    port = _int_in_range("--listen port", port_text, 0, 65535)
    return host.strip("[]"), port


def _positive_int(name: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    return _int_in_range(name, raw, 1, None)


def _int_in_range(name: str, raw: str, low: int, high: int | None) -> int:
    try:
        if not raw.strip().isascii():  # int() also reads Arabic-Indic, fullwidth digits
            raise ValueError(raw)
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def _seconds_or_zero(name: str, raw: str | None, default: float) -> float:
    if raw is not None and raw.strip() in ("0", "0.0"):
        return 0.0
    return _positive_seconds(name, raw, default)


def _positive_seconds(name: str, raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        if not raw.strip().isascii():  # float() also reads Arabic-Indic, fullwidth digits
            raise ValueError(raw)
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value
