"""Tests for securechat.tap: option parsing and the composed service tree."""

import os
import stat

from twisted.internet.testing import MemoryReactorClock as MemoryReactor
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from securechat import tap
from securechat.config import DEFAULT_PORT
from securechat.constants import LISTEN_BACKLOG
from securechat.server.protocol import ServerFactory
from securechat.server.tls import SELF_SIGNED_KEY


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self):
        """No options give the loopback interface and the default port."""
        settings = parse()["settings"]
        self.assertEqual((settings.interface, settings.port), ("127.0.0.1", DEFAULT_PORT))

    def test_flags(self):
        """Every documented flag is accepted and lands in the settings."""
        settings = parse(
            "--port", "1234", "--interface", "::1", "--data-dir", "d",
            "--tls-cert", "c.pem", "--tls-key", "k.pem", "--server-name", "chat.example",
        )["settings"]
        self.assertEqual(
            (settings.port, settings.interface, settings.data_dir, settings.tls_cert,
             settings.tls_key, settings.public_name),
            (1234, "::1", "d", "c.pem", "k.pem", "chat.example"),
        )

    def test_config_file_overridden_by_flag(self):
        """--config is read and a flag beats it."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[listen]\nport = 5000\n[storage]\ndata_dir = \"x\"\n")
        settings = parse("--config", path, "--port", "5001")["settings"]
        self.assertEqual((settings.port, settings.data_dir), (5001, "x"))

    def test_bad_values_are_usage_errors(self):
        """Bad flags and bad config files surface as UsageError naming the problem."""
        self.assertRaises(usage.UsageError, parse, "--port", "x")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[nope]\na = 1\n")
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("unknown setting nope.a", str(error))

    def test_help_explains_every_option(self):
        """--help text mentions every option with an explanation."""
        text = str(tap.Options())
        for flag in ["--config", "--data-dir", "--port", "--interface", "--tls-cert", "--tls-key"]:
            self.assertIn(flag, text)


class TwistdLoggingTests(SynchronousTestCase):
    def twistd(self, *argv):
        from twisted.scripts._twistd_unix import ServerOptions

        options = ServerOptions()
        options.parseOptions(["--nodaemon", *argv])
        return options

    def test_our_observer_unless_told_otherwise(self):
        """Under twistd, our Options make twistd log through our format and level."""
        options = self.twistd("securechat", "--log-format", "json", "--log-level", "warn")
        observer = options["logger"]()
        self.assertEqual(options.subOptions["log"].format, "json")
        self.assertEqual(options.subOptions["log"].level, "warn")
        self.assertTrue(callable(observer))

    def test_operator_logger_wins(self):
        """An explicit twistd --logger is left alone."""
        options = self.twistd("--logger", "twisted.logger.textFileLogObserver", "securechat")
        from twisted.logger import textFileLogObserver

        self.assertIs(options["logger"], textFileLogObserver)


class MakeServiceTests(SynchronousTestCase):
    def test_listens_with_tls_where_told(self):
        """makeService listens on the given interface and port, with a deep
        backlog and wrapped in TLS, and creates the data dir (0700) and a self-signed key (0600)."""
        data_dir = os.path.join(self.mktemp(), "data")
        reactor = MemoryReactor()
        service = tap.makeService(
            parse("--port", "6543", "--interface", "127.0.0.2", "--data-dir", data_dir), reactor
        )
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, backlog, interface), (6543, LISTEN_BACKLOG, "127.0.0.2"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIsInstance(factory.wrappedFactory, ServerFactory)
        self.assertEqual(stat.S_IMODE(os.stat(data_dir).st_mode), 0o700)
        key_mode = os.stat(os.path.join(data_dir, SELF_SIGNED_KEY)).st_mode
        self.assertEqual(stat.S_IMODE(key_mode), 0o600)

    def test_proxy_protocol_reads_the_header_first(self):
        """With --proxy-protocol the listener reads HAProxy's PROXY header before
        TLS, and the factory counts clients by the address it gives."""
        reactor = MemoryReactor()
        service = tap.makeService(parse("--proxy-protocol", "true", "--data-dir",
                                        os.path.join(self.mktemp(), "data")), reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        [(_, factory, _, _)] = reactor.tcpServers
        self.assertIsInstance(factory, HAProxyWrappingFactory)
        self.assertIsInstance(factory.wrappedFactory, TLSMemoryBIOFactory)
        self.assertTrue(factory.wrappedFactory.wrappedFactory.proxied)

    def test_unusable_certificate_exits_with_message(self):
        """A configured certificate that cannot be read stops start-up with one line."""
        data_dir = self.mktemp()
        missing = os.path.abspath(self.mktemp())
        error = self.assertRaises(
            SystemExit, tap.makeService,
            parse("--data-dir", data_dir, "--tls-cert", missing, "--tls-key", missing),
            MemoryReactor(),
        )
        self.assertEqual(str(error), f"securechat: {missing}: No such file or directory")
