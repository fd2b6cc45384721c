"""Server settings: one table that drives the TOML file, the command line,
the defaults and the validation, so the three can never disagree.

Precedence: built-in default < config file < command line. A setting that is
unknown, of the wrong type or out of range is refused with a message that
names it, before anything starts.
"""

import os
import socket
import tomllib
from dataclasses import dataclass

from securechat.constants import (
    DATA_DIR_MODE,
    IDLE_PING_SECONDS,
    LOGIN_TIMEOUT_SECONDS,
    MAX_CONNECTIONS_PER_IP,
    MAX_MEMBERS_PER_ROOM,
    MAX_PAUSED_SECONDS,
    MAX_ROOMS_PER_USER,
    MAX_SEND_QUEUE_BYTES,
    MAX_TOPIC_LENGTH,
    PING_TIMEOUT_SECONDS,
    RATE_BURST_LINES,
    RATE_LINES_PER_SECOND,
    REGISTRATIONS_PER_HOUR,
    RETENTION_DAYS,
    STORE_BURST_BYTES,
    STORE_BYTES_PER_DAY,
    STORE_BYTES_PER_SECOND,
)
from securechat.roomlog.entry import MAX_ROOM_MEMBERS
from securechat.wire.grammar import MAX_SYNC_ROOMS, MAX_TOKEN_BYTES

DEFAULT_PORT = 7470

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class ConfigError(Exception):
    """A configuration problem, worded for the operator: key and what to fix."""


@dataclass(frozen=True)
class Setting:
    """One setting: its TOML place (``section.key``), type, default and help."""

    key: str
    flag: str
    kind: type
    default: object
    help: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    @property
    def attribute(self) -> str:
        """The L{ServerSettings} field: the flag in snake_case."""
        return self.flag.replace("-", "_")

    def check(self, value, where: str):
        if self.kind is int and isinstance(value, bool) or not isinstance(value, self.kind):
            raise ConfigError(
                f"{where}: {self.key} must be {_KIND_NAMES[self.kind]}, got {value!r}"
            )
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{where}: {self.key} must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{where}: {self.key} must be at most {self.maximum}, got {value}")
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"{where}: {self.key} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        return value

    def parse_flag(self, text: str):
        """Convert a command-line string to this setting's type, then check it."""
        if self.kind is int:
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"--{self.flag} must be an integer, got {text!r}") from None
        elif self.kind is bool:
            if text.lower() not in _BOOLEAN_WORDS:
                raise ConfigError(f"--{self.flag} takes true or false, got {text!r}")
            value = _BOOLEAN_WORDS[text.lower()]
        else:
            value = text
        return self.check(value, f"--{self.flag}")


_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false"}
_BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

SETTINGS = (
    Setting(
        "listen.interface", "interface", str, "127.0.0.1",
        "Address to listen on; 0.0.0.0 or :: for every interface.",
    ),
    Setting(
        "listen.port", "port", int, DEFAULT_PORT,
        "TCP port for TLS connections (0: any free port).", 0, 65535,
    ),
    Setting(
        "listen.proxy_protocol", "proxy-protocol", bool, False,
        "Behind HAProxy (send-proxy-v2): read the client's address from the PROXY "
        "header, for per-address limits and logs (true or false).",
    ),
    Setting(
        "server.name", "server-name", str, "",
        "Name clients bind their login signature to (default: this host's name).",
    ),
    Setting(
        "storage.data_dir", "data-dir", str, "var",
        "Directory for the database and generated TLS material; created mode 0700.",
    ),
    Setting(
        "storage.database", "database", str, "",
        "SQLite file, or postgresql://user@host/db for a database several daemons share "
        "(default: securechat.db in the data dir).",
    ),
    Setting(
        "storage.retention_days", "retention-days", int, RETENTION_DAYS,
        "Days messages are kept (0: for ever); a room's owner may ask for less.", 0, 36_500,
    ),
    Setting(
        "cluster.redis", "redis", str, "",
        "redis://host:port/db joining the daemons that share a PostgreSQL database "
        "(default: none; one daemon, fan-out in-process).",
    ),
    Setting(
        "tls.cert", "tls-cert", str, "",
        "PEM certificate (chain) file; default: a self-signed one made in the data dir.",
    ),
    Setting(
        "tls.key", "tls-key", str, "",
        "PEM private key file for --tls-cert; the two go together.",
    ),
    Setting(
        "accounts.registration", "registration", str, "open",
        "Who may create an account: open, token (operator-issued tokens) or closed.",
        choices=("open", "token", "closed"),
    ),
    Setting(
        "limits.rooms_per_user", "rooms-per-user", int, MAX_ROOMS_PER_USER,
        "Rooms one user may belong to.", 1, MAX_SYNC_ROOMS,
    ),
    Setting(
        "limits.members_per_room", "members-per-room", int, MAX_MEMBERS_PER_ROOM,
        "Members one room may have (each key rotation wraps a key for each, and "
        "names each in one entry of the room's log).", 2, MAX_ROOM_MEMBERS,
    ),
    Setting(
        "limits.topic_length", "topic-length", int, MAX_TOPIC_LENGTH,
        "Longest room topic, in characters.", 0, MAX_TOPIC_LENGTH,
    ),
    Setting(
        "limits.lines_per_second", "lines-per-second", int, RATE_LINES_PER_SECOND,
        "Flood control: lines a connection may send per second, sustained.", 1, 100_000,
    ),
    Setting(
        "limits.line_burst", "line-burst", int, RATE_BURST_LINES,
        "Flood control: lines a connection may send at once after a pause.", 1, 1_000_000,
    ),
    Setting(
        "limits.store_bytes_per_second", "store-bytes-per-second", int, STORE_BYTES_PER_SECOND,
        "Storage budget: bytes of messages one user may have stored per second, sustained "
        "(0: no limit).", 0, 1024 * 1024 * 1024,
    ),
    Setting(
        "limits.store_burst_bytes", "store-burst-bytes", int, STORE_BURST_BYTES,
        "Storage budget: bytes one user may have stored at once after a pause (at least the "
        "longest message).", 2 * MAX_TOKEN_BYTES, 1024 * 1024 * 1024,
    ),
    Setting(
        "limits.store_bytes_per_day", "store-bytes-per-day", int, STORE_BYTES_PER_DAY,
        "Storage budget: bytes of messages one user may have stored per UTC day (0: no "
        "limit).", 0, 1024 ** 4,
    ),
    Setting(
        "limits.registrations_per_hour", "registrations-per-hour", int, REGISTRATIONS_PER_HOUR,
        "Accounts one address may create per hour with open registration (0: no limit).",
        0, 1_000_000,
    ),
    Setting(
        "limits.connections_per_ip", "connections-per-ip", int, MAX_CONNECTIONS_PER_IP,
        "Concurrent connections from one IP address.", 1, 100_000,
    ),
    Setting(
        "limits.send_queue_bytes", "send-queue-bytes", int, MAX_SEND_QUEUE_BYTES,
        "Output held for a client that does not read before it is dropped.",
        64 * 1024, 1024 * 1024 * 1024,
    ),
    Setting(
        "timeouts.login", "login-timeout", int, LOGIN_TIMEOUT_SECONDS,
        "Seconds a connection may stay without logging in.", 1, 3600,
    ),
    Setting(
        "timeouts.idle_ping", "idle-ping", int, IDLE_PING_SECONDS,
        "Seconds of silence before the server PINGs a client.", 5, 86_400,
    ),
    Setting(
        "timeouts.ping", "ping-timeout", int, PING_TIMEOUT_SECONDS,
        "Seconds a client has to answer a PING before it is dropped.", 1, 3600,
    ),
    Setting(
        "timeouts.stalled_reader", "stalled-reader", int, MAX_PAUSED_SECONDS,
        "Seconds a client may read nothing while output waits before it is dropped.", 1, 3600,
    ),
    Setting(
        "log.format", "log-format", str, "text",
        "Log lines as text or json (one JSON object per line).", choices=("text", "json"),
    ),
    Setting(
        "log.level", "log-level", str, "info",
        "Least severe level logged; SIGHUP re-reads it from the config file.",
        choices=LOG_LEVELS,
    ),
    Setting(
        "metrics.port", "metrics-port", int, 0,
        "Prometheus metrics on 127.0.0.1:PORT; 0 turns them off.", 0, 65535,
    ),
)

_BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class ServerSettings:
    """The validated settings the daemon runs with."""

    interface: str
    port: int
    proxy_protocol: bool
    server_name: str
    data_dir: str
    database: str
    retention_days: int
    redis: str
    tls_cert: str
    tls_key: str
    registration: str
    rooms_per_user: int
    members_per_room: int
    topic_length: int
    lines_per_second: int
    line_burst: int
    store_bytes_per_second: int
    store_burst_bytes: int
    store_bytes_per_day: int
    registrations_per_hour: int
    connections_per_ip: int
    send_queue_bytes: int
    login_timeout: int
    idle_ping: int
    ping_timeout: int
    stalled_reader: int
    log_format: str
    log_level: str
    metrics_port: int

    @property
    def postgres(self) -> bool:
        return self.database.startswith(POSTGRES_SCHEMES)

    @property
    def public_name(self) -> str:
        """The name announced in the greeting and bound into logins."""
        return self.server_name or socket.gethostname()


def read_config_file(path: str) -> dict:
    """Read a TOML file into ``{"section.key": value}``, refusing unknown keys."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    values = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a [section], not a top-level key")
        for name, value in table.items():
            key = f"{section}.{name}"
            setting = _BY_KEY.get(key)
            if setting is None:
                raise ConfigError(f"{path}: unknown setting {key}")
            values[key] = setting.check(value, path)
    return values


def build_settings(config_file: str | None, flags: dict[str, str | None]) -> ServerSettings:
    """Merge defaults, the config file and command-line C{flags} (by flag name)."""
    values = {s.key: s.default for s in SETTINGS}
    if config_file:
        values.update(read_config_file(config_file))
    for setting in SETTINGS:
        text = flags.get(setting.flag)
        if text is not None:
            values[setting.key] = setting.parse_flag(text)
    if bool(values["tls.cert"]) != bool(values["tls.key"]):
        raise ConfigError("tls.cert and tls.key go together: set both, or neither")
    if values["cluster.redis"] and not values["cluster.redis"].startswith("redis://"):
        raise ConfigError("cluster.redis must be a redis://host:port/db URL")
    if values["cluster.redis"] and not values["storage.database"].startswith(POSTGRES_SCHEMES):
        raise ConfigError("cluster.redis joins daemons that share a database: set "
                          "storage.database to a postgresql:// URL too")
    return ServerSettings(**{_BY_KEY[k].attribute: v for k, v in values.items()})


def prepare_data_dir(path: str) -> str:
    """Create the data dir (owner-only) if needed and refuse one others can read."""
    try:
        os.makedirs(path, mode=DATA_DIR_MODE, exist_ok=True)
        mode = os.stat(path).st_mode & 0o777
    except OSError as error:
        raise ConfigError(f"data dir {path}: {error.strerror}") from None
    if mode & 0o077:
        try:
            os.chmod(path, DATA_DIR_MODE)
        except OSError as error:
            raise ConfigError(
                f"data dir {path} is readable by others (mode {mode:o}) "
                f"and cannot be fixed: {error.strerror}"
            ) from None
    return os.path.abspath(path)
