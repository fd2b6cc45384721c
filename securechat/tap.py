# -*- test-case-name: tests.test_tap -*-
"""``twistd securechat``: command-line options and the service tree.

Composition only: every piece is built elsewhere and plugged together here.
"""

from twisted.application.service import MultiService
from twisted.protocols.haproxy import proxyEndpoint
from twisted.python import usage

from securechat.config import SETTINGS, ConfigError, build_settings, prepare_data_dir
from securechat.constants import COMMIT_INTERVAL_SECONDS, LISTEN_BACKLOG
from securechat.server.backends import Unavailable, open_fanout, open_store
from securechat.server.daemonlog import DaemonLog, install_for_twistd
from securechat.server.limits import ConnectionLimits, StorageLimits
from securechat.server.metrics import ServerMetrics, metrics_service
from securechat.server.protocol import ServerFactory
from securechat.server.rooms import RoomLimits
from securechat.server.service import ChatService, ServiceSettings
from securechat.server.signals import ExitZeroOnTerm, ReloadOnHangup
from securechat.server.tls import (
    ReloadableServerTLS,
    TLSMaterialError,
    TLSServerService,
    ensure_self_signed,
)
from securechat.server.transport import ImmediateWriteEndpoint


class Options(usage.Options):
    synopsis = "[--config FILE] [options]"
    longdesc = (
        "Run the securechat daemon: an end-to-end encrypted chat server that "
        "relays and stores only ciphertext, over TLS. Settings come from the "
        "built-in defaults, then --config, then these options."
    )
    optParameters = [
        ["config", "c", None, "TOML config file (see conf/securechat.toml); options below override it."],
    ] + [
        [s.flag, None, None, s.help + (f" [default: {s.default}]" if s.default != "" else "")]
        for s in SETTINGS
    ]

    def postOptions(self) -> None:  # noqa: N802
        try:
            self["settings"] = self.read_settings()
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None
        settings = self["settings"]
        twistd = self.parent if self.parent is not None else {}
        self["log"] = DaemonLog(settings.log_format, settings.log_level, twistd.get("logfile"),
                                read_level=lambda: self.read_settings().log_level)
        if self.parent is not None:
            install_for_twistd(self.parent, self["log"])

    def read_settings(self):
        """Defaults, the config file, then the command line: also on SIGHUP."""
        return build_settings(self["config"], {s.flag: self[s.flag] for s in SETTINGS})


def makeService(config, reactor=None) -> MultiService:  # noqa: N802
    if reactor is None:
        from twisted.internet import reactor
    settings = config["settings"]
    try:
        data_dir = prepare_data_dir(settings.data_dir)
        cert, key = settings.tls_cert, settings.tls_key
        if not cert:
            cert, key = ensure_self_signed(data_dir, (settings.server_name,))
        tls = ReloadableServerTLS(cert, key)
        store = open_store(settings, data_dir)
        fanout = open_fanout(settings, reactor)
    except (ConfigError, TLSMaterialError, OSError, Unavailable) as error:
        raise SystemExit(f"securechat: {error}") from None

    root = MultiService()
    metrics = ServerMetrics()
    chat = ChatService(
        store,
        reactor,
        ServiceSettings(
            settings.public_name,
            settings.registration,
            RoomLimits(settings.rooms_per_user, settings.members_per_room, settings.topic_length),
            commit_interval=COMMIT_INTERVAL_SECONDS,
            storage=StorageLimits(settings.store_bytes_per_second, settings.store_burst_bytes,
                                  settings.store_bytes_per_day),
            retention_days=settings.retention_days,
        ),
        metrics=metrics,
        fanout=fanout,
    )
    chat.setServiceParent(root)
    endpoint = ImmediateWriteEndpoint(reactor, settings.port, backlog=LISTEN_BACKLOG,
                                      interface=settings.interface)
    if settings.proxy_protocol:
        endpoint = proxyEndpoint(endpoint)
    limits = ConnectionLimits(
        rate_per_second=settings.lines_per_second,
        rate_burst=settings.line_burst,
        per_ip=settings.connections_per_ip,
        login_timeout=settings.login_timeout,
        idle_ping=settings.idle_ping,
        ping_timeout=settings.ping_timeout,
        max_send_queue=settings.send_queue_bytes,
        max_paused=settings.stalled_reader,
        registrations_per_hour=settings.registrations_per_hour,
    )
    factory = ServerFactory(chat, settings.public_name, reactor, limits=limits, metrics=metrics,
                            proxied=settings.proxy_protocol)
    TLSServerService(endpoint, factory, tls).setServiceParent(root)
    ReloadOnHangup(reactor, [tls.reload, config["log"].reload]).setServiceParent(root)
    ExitZeroOnTerm(reactor).setServiceParent(root)
    if settings.metrics_port:
        metrics_service(reactor, settings.metrics_port, metrics).setServiceParent(root)
    return root
