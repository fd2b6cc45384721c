# -*- test-case-name: tests.test_metrics -*-
"""What the daemon counts for Prometheus, and the loopback endpoint serving it.

The counters are always kept (they cost a few additions); the endpoint is
off unless ``metrics.port`` is set, and then listens on 127.0.0.1 only:
counts of rooms and connections are metadata, not for the world. Nothing
here ever sees a message's contents, only how many and how big.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.twisted import MetricsResource
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site

from securechat.constants import METRICS_INTERFACE

# Commit latency buckets, seconds: an fsync on SSD is around a millisecond,
# on a busy disk tens of milliseconds; beyond a second something is wrong.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.connections = Gauge("securechat_connections", "Open client connections.",
                                 registry=self.registry)
        self.rooms = Gauge("securechat_rooms", "Rooms on this server.", registry=self.registry)
        self.messages = Counter("securechat_messages_relayed",
                                "Messages stored and relayed to their rooms.",
                                registry=self.registry)
        self.traffic = TrafficCounters()
        self.registry.register(self.traffic)
        self.rejections = Counter("securechat_rejections", "ERROR replies sent, by code.",
                                  ["code"], registry=self.registry)
        self.commit_seconds = Histogram("securechat_store_commit_seconds",
                                        "Time to commit one batch of messages.",
                                        buckets=COMMIT_BUCKETS, registry=self.registry)

    def count_rooms(self, rooms) -> None:
        """Report C{len(rooms())} whenever Prometheus scrapes."""
        self.rooms.set_function(lambda: len(rooms()))


class TrafficCounters:
    """Bytes in and out, as plain integers read when Prometheus scrapes.

    They change on every read and every write of every connection, where a
    prometheus_client Counter would take a lock for each change. Only the
    reactor thread adds to them.
    """

    def __init__(self):
        self.received = 0
        self.sent = 0

    def collect(self):
        yield CounterMetricFamily("securechat_received_bytes",
                                  "Bytes received from clients (after TLS).", value=self.received)
        yield CounterMetricFamily("securechat_sent_bytes", "Bytes sent to clients (before TLS).",
                                  value=self.sent)


def metrics_service(reactor, port: int, metrics: ServerMetrics) -> StreamServerEndpointService:
    """GET /metrics on 127.0.0.1:C{port}."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    endpoint = TCP4ServerEndpoint(reactor, port, interface=METRICS_INTERFACE)
    return StreamServerEndpointService(endpoint, Site(root))
