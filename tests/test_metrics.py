"""Tests for securechat.server.metrics: what the daemon counts, and where it
serves the counts."""

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from securechat.server.metrics import METRICS_INTERFACE, ServerMetrics, metrics_service
from tests.clientharness import Network


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels or None)


class CountingTests(SynchronousTestCase):
    def setUp(self):
        self.net = Network()
        self.alice = self.net.client("alice")
        self.alice.session.join("#lab")
        self.net.settle()
        self.protocol_metrics = self.net.server.factory.metrics
        self.service_metrics = self.net.server.service.metrics

    def test_connections_and_bytes(self):
        """Open connections are a gauge; bytes in and out only grow."""
        self.assertEqual(sample(self.protocol_metrics, "securechat_connections"), 1)
        bob = self.net.client("bob")
        self.assertEqual(sample(self.protocol_metrics, "securechat_connections"), 2)
        self.net.disconnect(bob)
        self.assertEqual(sample(self.protocol_metrics, "securechat_connections"), 1)
        self.assertGreater(sample(self.protocol_metrics, "securechat_received_bytes_total"), 0)
        self.assertGreater(sample(self.protocol_metrics, "securechat_sent_bytes_total"), 0)

    def test_traffic_is_read_when_scraped(self):
        """Bytes added to the plain counters are what Prometheus reads, at the moment it reads."""
        metrics = ServerMetrics()
        metrics.traffic.sent += 300
        metrics.traffic.received += 41
        self.assertEqual((sample(metrics, "securechat_sent_bytes_total"),
                          sample(metrics, "securechat_received_bytes_total")), (300, 41))

    def test_messages_rooms_and_commit_latency(self):
        """Each stored message counts once, every batch's commit time is observed, and
        the rooms gauge reads the registry when scraped."""
        for n in range(3):
            self.alice.session.send_text("#lab", f"m{n}")
        self.net.settle()
        self.assertEqual(sample(self.service_metrics, "securechat_messages_relayed_total"), 3)
        self.assertGreaterEqual(
            sample(self.service_metrics, "securechat_store_commit_seconds_count"), 1)
        self.assertEqual(sample(self.service_metrics, "securechat_rooms"), 1)

    def test_rejections_by_code(self):
        """Each ERROR reply counts under its code."""
        d = self.alice.session.request("LOG", "no-hash", "0")
        self.net.settle()
        self.failureResultOf(d)
        self.assertEqual(sample(self.protocol_metrics, "securechat_rejections_total",
                                code="BAD_NAME"), 1)


class EndpointTests(SynchronousTestCase):
    def test_loopback_only(self):
        """The metrics endpoint listens on 127.0.0.1 at the configured port."""
        reactor = MemoryReactor()
        service = metrics_service(reactor, 9470, ServerMetrics())
        service.privilegedStartService()
        service.startService()
        [(port, _factory, _backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (9470, METRICS_INTERFACE))
        self.assertEqual(METRICS_INTERFACE, "127.0.0.1")
