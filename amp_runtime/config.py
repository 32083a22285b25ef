"""Configuration: one msgspec Struct per `config.toml` section.

Precedence is flag > environment (`AMP_<SECTION>_<KEY>`) > file > default. Every problem is
reported as a `ConfigError` naming the key and where it came from, so the CLI can exit 2 with
one clear line instead of a traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from .core import header_rules
from .core.ids import id_list_problems, worker_id_problem


class ConfigError(Exception):
    """A bad key, value or file; the message names the key and the source."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerConfig(_Section):
    bind: str = "127.0.0.1:1610"
    data_dir: str = "./data"
    shutdown_grace_s: float = 10.0
    gc_freeze: bool = True
    gc_threshold: list[int] = msgspec.field(default_factory=lambda: [50_000, 10, 10])


class HttpConfig(_Section):
    max_body_bytes: int = 1_048_576
    max_json_depth: int = 32
    openapi_enabled: bool = True
    max_id_length: int = 256
    max_tags: int = 64
    max_open_streams: int = 1000
    max_batch: int = 1000
    hot_path: bool = True
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this long
    max_connections: int = 0  # 0 = sized from the open-file limit (core.connections.default_max_connections)
    body_timeout_s: float = 30.0  # a request body not all in by then closes its connection
    send_timeout_s: float = 30.0  # a client that reads nothing of an answer for this long is closed


class AuthClient(_Section):
    access_key: str
    secret_key: str


class AuthConfig(_Section):
    api_key: str = ""
    jwt_secret: str = ""
    jwt_ttl_s: int = 86400
    clients: list[AuthClient] = []


class StoreConfig(_Section):
    url: str = ""
    file_name: str = "amp_runtime.duckdb"
    group_commit_rows: int = 500
    group_commit_ms: float = 5.0
    reconnect_s: float = 0.0  # how long a lost store is retried before the process exits 3 (0: for as long as it takes)


class ActorsConfig(_Section):
    mailbox_size: int = 1024
    ask_timeout_s: float = 30.0
    max_restarts_per_minute: int = 5


class LogConfig(_Section):
    level: str = "info"
    ring_size: int = 1000
    format: str = "text"  # or "json": one object per line
    file: str = ""  # a path instead of stderr, reopened when logrotate moves it


class FunctionsConfig(_Section):
    modules: list[str] = []
    # Directories put on the import path before `modules` load; relative ones are taken from
    # the config file's directory (absolute after load_config), so a module beside config.toml loads.
    paths: list[str] = msgspec.field(default_factory=lambda: ["."])


class WorkerConfig(_Section):
    id: str = "worker-01"
    slots: int = 10
    max_queue: int = 1000
    tags: list[str] = []
    groups: list[str] = msgspec.field(default_factory=lambda: ["default"])


class TasksConfig(_Section):
    contract: int = 1
    expose_tracebacks: bool = False
    default_timeout_s: float = 30.0
    keep_results: int = 10_000
    keep_results_s: float = 3600.0
    retry_after_s: int = 1
    slots_push_min_interval_ms: float = 100.0
    tags: list[str] = []
    process_pool_size: int = 0  # worker processes for run="process" functions; 0 = the CPU count
    crash_retries: int = 1  # runs of a webhook task that may end the process before it is settled failed


class WebhookConfig(_Section):
    headers: dict[str, str] = {}
    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 10.0
    allow_private: bool = False
    max_payload_bytes: int = 1_048_576
    signing_key: str = ""  # set: every delivery carries X-Amp-Signature (HMAC-SHA256 of "t.body")


class RegistryConfig(_Section):
    heartbeat_s: float = 1.0
    default_timeout_s: int = 600
    default_last_seen_s: int = 3600
    liveness_s: float = 5.0
    stats_retention_days: float = 7.0
    expiry_check_s: float = 1.0


class JobsConfig(_Section):
    batch_blocks: int = 1000
    continuous_blocks_per_s: float = 1000.0
    reschedule_on_expiry: bool = True
    default_limit: int = 50
    max_limit: int = 1000
    worker_check_s: float = 1.0
    expiry_grace_s: float = 5.0
    output_dir: str = ""


class DurableConfig(_Section):
    max_workers: int = 1000
    max_retries: int = 3
    retry_delay_s: float = 0.1
    invoke_timeout_s: float = 30.0
    account_id: str = "00000000-0000-0000-0000-000000000000"


class ClusterConfig(_Section):
    """Task routing between peers on one PostgreSQL store. `join` is what is left of the retired
    coordinator/node mode: without a PostgreSQL store it stops `serve` (exit 2); with one it is
    ignored (a warning), since every process on the store is a peer."""

    join: str = ""
    key: str = ""
    advertise_url: str = ""
    connect_timeout_s: float = 2.0


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    actors: ActorsConfig = msgspec.field(default_factory=ActorsConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    functions: FunctionsConfig = msgspec.field(default_factory=FunctionsConfig)
    workers: list[WorkerConfig] = msgspec.field(default_factory=lambda: [WorkerConfig()])
    tasks: TasksConfig = msgspec.field(default_factory=TasksConfig)
    webhook: WebhookConfig = msgspec.field(default_factory=WebhookConfig)
    registry: RegistryConfig = msgspec.field(default_factory=RegistryConfig)
    jobs: JobsConfig = msgspec.field(default_factory=JobsConfig)
    durable: DurableConfig = msgspec.field(default_factory=DurableConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def store_path(self) -> Path:
        return self.data_path / self.store.file_name


def _section_types() -> dict[str, type]:
    return {f.name: f.type for f in msgspec.structs.fields(Config)}


def _parse_env_value(raw: str) -> Any:
    """Env values are TOML literals when they parse as one (`10`, `true`, `["a"]`), else strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


ENV_PREFIX = "AMP_"


def _env_names() -> dict[str, tuple[str, str]]:
    """`AMP_<SECTION>_<KEY>` -> (section, key) for every key the environment may set."""
    names = {}
    for section, typ in _section_types().items():
        if not isinstance(typ, type) or not issubclass(typ, msgspec.Struct):
            continue  # list sections ([[workers]]) are file-only
        for key in typ.__struct_fields__:
            names[f"{ENV_PREFIX}{section}_{key}".upper()] = (section, key)
    return names


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    names = _env_names()
    # Strict: a misspelt variable would be ignored silently (AMP_AUTH_APIKEY: no API key at all).
    unknown = sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in names)
    if unknown:
        raise ConfigError("bad config in the environment: " + "; ".join(_unknown_env(name, names) for name in unknown))
    overrides: dict[str, dict[str, Any]] = {}
    for name, (section, key) in names.items():
        if name in environ:
            overrides.setdefault(section, {})[key] = _parse_env_value(environ[name])
    return overrides


def _unknown_env(name: str, names: dict[str, tuple[str, str]]) -> str:
    shown = name if name.isprintable() and len(name) <= 128 else repr(name[:128])
    if name.startswith(f"{ENV_PREFIX}WORKERS_"):
        return f"{shown}: no such key ([[workers]] is set in the config file only)"
    nearest = difflib.get_close_matches(name, names, n=1)
    if nearest:
        return f"{shown}: no such key; did you mean {nearest[0]}?"
    return f"{shown}: no such key (AMP_<SECTION>_<KEY> sets a key of config.toml; [[workers]] only in the file)"


def _describe(error: msgspec.ValidationError, env_keys: dict[str, str]) -> str:
    # msgspec says "... - at `$.http.max_body_bytes`"; turn the path into a dotted key.
    text = str(error)
    message, path = text, ""
    if " - at `$." in text:
        message, path = text.rsplit(" - at `$.", 1)
        path = path.rstrip("`")
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        key = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return f"key {key}: unknown key"
    origin = f" (from {env_keys[path]})" if path in env_keys else ""
    return f"key {path or '(top level)'}{origin}: {message}"


def load_config(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Config:
    """Build the config. `path=None` reads `./config.toml` when it exists."""
    environ = dict(os.environ) if environ is None else environ
    data: dict[str, Any] = {}
    source = "defaults"
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None

    env = _env_overrides(environ)
    env_keys = {f"{sec}.{key}": f"AMP_{sec}_{key}".upper() for sec, values in env.items() for key in values}
    for layer_name, layer in (("environment", env), ("flags", overrides or {})):
        for section, values in layer.items():
            if isinstance(values, dict):
                data.setdefault(section, {}).update(values)
            else:  # a list section ([[workers]]) is replaced whole
                data[section] = values
        if layer:
            source = f"{source} (+ {layer_name})"

    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"bad config in {source}: {_describe(exc, env_keys)}") from None
    _check(config, source)
    base = Path(path).absolute().parent if path is not None else Path.cwd()
    config.functions.paths = [os.path.normpath(base / entry) for entry in config.functions.paths]
    missing = [entry for entry in config.functions.paths if not os.path.exists(entry)]
    if missing:  # a typo would otherwise surface only as a module not found, or not at all
        raise ConfigError(f"bad config in {source}: functions.paths: no such directory: {', '.join(missing)}")
    return config


MIN_JWT_SECRET_BYTES = 32
MAX_SLOTS = 10_000  # slots of one worker: 10^8 (a typo) ran the process out of memory before it listened


def _check(config: Config, source: str) -> None:
    problems = []
    if not config.workers:
        problems.append("workers: at least one [[workers]] table is needed")
    ids = [w.id for w in config.workers]
    if len(set(ids)) != len(ids):
        problems.append("workers.id: worker ids must be unique")
    limits = config.http
    # The rules the APIs apply to the same values: a worker the registry would refuse never starts.
    for i, w in enumerate(config.workers):
        problem = worker_id_problem(w.id, limits.max_id_length)
        if problem is not None:
            problems.append(f"workers[{i}].id: {problem}")
        for key in ("tags", "groups"):
            problems += id_list_problems(f"workers[{i}].{key}", getattr(w, key), limits.max_tags, limits.max_id_length)
    problems += id_list_problems("tasks.tags", config.tasks.tags, limits.max_tags, limits.max_id_length)
    for w in config.workers:
        if not 1 <= w.slots <= MAX_SLOTS:  # each slot is a task held for the process's life
            problems.append(f"workers.slots: worker {w.id} needs 1 to {MAX_SLOTS} slots, not {w.slots}")
        if w.max_queue < 0:
            problems.append(f"workers.max_queue: worker {w.id} has a negative queue length")
    gc_threshold = config.server.gc_threshold
    if gc_threshold and (len(gc_threshold) != 3 or gc_threshold[0] < 1 or min(gc_threshold) < 0):
        problems.append("server.gc_threshold: three counts [gen0 >= 1, gen1, gen2], or [] for Python's default")
    if not config.tasks.default_timeout_s > 0:  # a task must get a chance to start (also NaN)
        problems.append("tasks.default_timeout_s: must be positive")
    if config.tasks.process_pool_size < 0:
        problems.append("tasks.process_pool_size: must be 0 (the CPU count) or more")
    if config.auth.jwt_secret and len(config.auth.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        # PyJWT signs with a shorter one but warns at every token: RFC 7518 3.2 wants the hash's length.
        problems.append(f"auth.jwt_secret: at least {MIN_JWT_SECRET_BYTES} bytes (HS256, RFC 7518 3.2), or empty"
                        " for a random one kept in the data dir")
    if config.tasks.crash_retries < 0:
        problems.append("tasks.crash_retries: must be 0 or more")
    if config.http.max_body_bytes < 1:
        problems.append("http.max_body_bytes: must be positive")
    if config.http.max_batch < 1:
        problems.append("http.max_batch: must be positive")
    if not config.http.keep_alive_s > 0:  # also NaN
        problems.append("http.keep_alive_s: must be positive")
    for key in ("body_timeout_s", "send_timeout_s"):
        if not getattr(config.http, key) > 0:  # also NaN
            problems.append(f"http.{key}: must be positive")
    if config.http.max_connections < 0:
        problems.append("http.max_connections: must be 0 (sized from the open-file limit) or more")
    registry = config.registry
    for key in ("heartbeat_s", "expiry_check_s"):
        if getattr(registry, key) <= 0:
            problems.append(f"registry.{key}: must be positive")
    if config.cluster.join and not config.store.url:
        problems.append("cluster.join: the coordinator/node mode is gone; a cluster runs on PostgreSQL: "
                        "give every process the same [store] url (postgresql://...) and no join")
    if config.cluster.advertise_url and not config.cluster.advertise_url.startswith("http://"):
        # The server speaks plain HTTP and so does the peers' forwarding pool: an https:// URL
        # would make every forwarded sync task fail after it may have run.
        problems.append("cluster.advertise_url: an http:// base URL (peers talk plain HTTP to each other), "
                        "or empty for the bound URL")
    if config.store.url and not config.cluster.advertise_url and \
            config.server.bind.rpartition(":")[0].strip("[]") in ("0.0.0.0", "::", ""):
        # Else it advertises http://0.0.0.0:port: a peer on another host dialling it reaches itself.
        problems.append("cluster.advertise_url: required on a PostgreSQL store when server.bind listens on every "
                        "address: the URL the other peers reach this process at")
    if config.cluster.connect_timeout_s <= 0:
        problems.append("cluster.connect_timeout_s: must be positive")
    if config.store.url and not config.store.url.startswith(POSTGRES_URL_SCHEMES):
        # Never echo the value: it may hold a password.
        problems.append("store.url: empty (the DuckDB file in data_dir) or a postgresql:// URL")
    if config.store.reconnect_s < 0:
        problems.append("store.reconnect_s: must not be negative")
    problems += [f"webhook.headers{'' if name is None else f'[{name[:64]!r}]'}: {problem}"
                 for name, problem in header_rules.header_problems(config.webhook.headers)]
    webhook = config.webhook
    for key, ok, rule in (("attempts", webhook.attempts >= 1, "at least 1"),
                          ("timeout_s", webhook.timeout_s > 0, "must be positive"),  # also NaN
                          ("base_delay_s", webhook.base_delay_s >= 0, "must not be negative"),
                          ("max_delay_s", webhook.max_delay_s >= 0, "must not be negative"),
                          ("max_payload_bytes", webhook.max_payload_bytes >= 1, "must be positive")):
        if not ok:
            problems.append(f"webhook.{key}: {rule}")
    if config.log.level.lower() not in ("debug", "info", "warning", "error"):
        problems.append("log.level: one of debug, info, warning, error")
    if config.log.format not in ("text", "json"):
        problems.append("log.format: text or json")
    if problems:
        raise ConfigError(f"bad config in {source}: " + "; ".join(problems))


POSTGRES_URL_SCHEMES = ("postgresql://", "postgres://")


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"server.bind: expected HOST:PORT, got {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
