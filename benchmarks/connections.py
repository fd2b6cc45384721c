"""The connections scenario: thousands of idle, logged-in TLS connections,
each joined to a room of 20 members. It measures what a connection costs the
server in memory, and how fast the server takes them in (TLS, login, join).

RSA-3072 identities are too slow to make by the thousand, so a few hundred
accounts each hold many connections (the daemon allows several per account):
connection c logs in as account c % 200 and joins room c // 20, so every
room has 20 distinct members. Each connection has its own loopback source
address, within the daemon's per-address cap.

The daemon sends a room's events to every connection of each member account,
so a membership made in the window would reach the fifty connections of each
of 19 accounts, a storm no real room of 20 people makes. The accounts and
their memberships are therefore made once, through the protocol, and the
daemon's data dir is cached; each run starts a daemon on a copy of it. The
window then holds what a reconnect storm costs: TLS, LOGIN (a signature the
load generator makes, about 2 ms each, spread over the workers) and JOIN.
"""

import math
import os
import time
from dataclasses import dataclass, field

from twisted.internet import defer

from benchmarks import identities
from benchmarks.loadgen import (
    DaemonClient,
    Histogram,
    Peers,
    RelayClient,
    Room,
    connect_all,
    cpu_seconds,
    serve,
)
from benchmarks.processes import (
    Workers,
    build_data_dir,
    cache_path,
    copy_data_dir,
    source_address,
    start_server,
)
from benchmarks.report import median, ms, ratio

ACCOUNTS = 200
ROOM_SIZE = 20
# Targets from the issue: RSS per connection at 5k, and the connect rate.
RSS_TARGET = 1.2
RATE_TARGET = 0.65
RSS_TARGET_AT = 5000


@dataclass(frozen=True)
class Spec:
    count: int
    accounts: int = ACCOUNTS  # fewer only to spare a fresh test run the key generation
    settle: float = 1.0  # idle seconds before the RSS of all connections is read
    in_flight: int = 100  # connects under way at once, per worker

    @property
    def name(self) -> str:
        count = f"{self.count // 1000}k" if self.count % 1000 == 0 else str(self.count)
        return f"connections-{count}"

    @property
    def used_accounts(self) -> int:
        return min(self.accounts, self.count)


def room_name(connection: int) -> str:
    return f"#idle{connection // ROOM_SIZE}"


class Memberships:
    """What a registering connection joins: every room its account will be in,
    each joined after the members before it (see L{Room.joined})."""

    name = None

    def __init__(self, names: list[str], rooms: dict[str, Room]):
        self.names = names
        self.rooms = rooms

    @defer.inlineCallbacks
    def joined(self, client):
        for name in self.names:
            room = self.rooms.setdefault(name, Room(name))
            yield room.joined(client)


class IdleWorker(Peers):
    """Opens its share of the connections, as many at once as the plan allows,
    then holds them until the orchestrator asks for a report. Or, to prepare a
    daemon's data dir, registers every account and makes it a member of its rooms."""

    def __init__(self, plan: dict):
        super().__init__(plan)
        self.clients = []
        self.finished = 0.0

    @defer.inlineCallbacks
    def setup(self):
        plan = self.plan
        accounts = plan["accounts"]
        if plan["make"]:
            yield self._make(accounts, plan["count"])
            return
        keys = identities.load({c % accounts for c in plan["connections"]})
        rooms: dict[str, Room] = {}
        for c in plan["connections"]:
            room = rooms.setdefault(room_name(c), Room(room_name(c)))
            args = (self, f"u{c % accounts}", keys[c % accounts], room, source_address(c))
            self.clients.append(DaemonClient(*args, login=True) if plan["server"] == "daemon"
                                else RelayClient(*args))

    @defer.inlineCallbacks
    def _make(self, accounts: int, count: int):
        keys = identities.load(range(accounts))
        rooms = {}
        makers = [DaemonClient(self, f"u{a}", keys[a], Memberships(
                      sorted({room_name(c) for c in range(a, count, accounts)}), rooms),
                      source_address(a))
                  for a in range(accounts)]
        failures = yield connect_all(makers, self.plan["in_flight"])
        if failures:
            failures[0][1].raiseException()

    def _completed(self, client):
        self.finished = time.time()
        self.latency.add(self.finished - client.connect_started)
        return client

    @defer.inlineCallbacks
    def run(self):
        self.watching = True
        cpu = cpu_seconds()
        started = time.time()
        for client in self.clients:
            client.ready.addCallback(self._completed)
        failures = yield connect_all(self.clients, self.plan["in_flight"])
        for _, failure in failures:
            self.count(failure.getErrorMessage().split(":")[0][:60] or failure.type.__name__)
        return {"started": started, "finished": self.finished, "latency": self.latency.counts,
                "connected": len(self.clients) - len(failures), "cpu": cpu_seconds() - cpu}

    def report(self):
        """Failures of any kind so far, including connections lost while idle."""
        return {"errors": self.errors}


def _plan(server, spec: Spec, make: bool, connections=()) -> dict:
    return {"server": server.kind, "host": "127.0.0.1", "port": server.port,
            "fingerprint": server.fingerprint, "accounts": spec.used_accounts,
            "count": spec.count, "in_flight": spec.in_flight, "make": make,
            "connections": connections}


def plan_workers(spec: Spec, server, workers: int) -> list[dict]:
    """Whole rooms per worker, each connection with its own source address."""
    rooms = math.ceil(spec.count / ROOM_SIZE)
    return [_plan(server, spec, False,
                  [c for room in range(worker, rooms, workers)
                   for c in range(room * ROOM_SIZE, min((room + 1) * ROOM_SIZE, spec.count))])
            for worker in range(min(workers, rooms))]


def ensure(spec: Spec) -> str:
    """The daemon data dir with the accounts and rooms for C{spec} (made once,
    then cached): one worker, so each room's first member can create it before
    the others join."""
    path = cache_path(f"connections-{spec.count}-{spec.used_accounts}")
    if os.path.isdir(path):
        return path
    print(f"connections: making {spec.used_accounts} accounts, members of "
          f"{math.ceil(spec.count / ROOM_SIZE):,} rooms, in {path} (once; cached)", flush=True)

    def prepare(server):
        Workers("benchmarks.connections", [_plan(server, spec, True)]).stop()

    return build_data_dir(path, prepare)


@dataclass
class Outcome:
    count: int
    connected: int = 0
    seconds: float = 0.0
    rss_per_connection: float = 0.0
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    overflows: int = 0
    latency: Histogram = field(default_factory=Histogram)
    errors: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.connected / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        return self.count - self.connected + self.errors.get("connection lost", 0)


def run_once(spec: Spec, kind: str, workers: int) -> Outcome:
    server = start_server(kind, copy_data_dir(ensure(spec)) if kind == "daemon" else None)
    pool = None
    try:
        before = server.rss_bytes()
        pool = Workers("benchmarks.connections", plan_workers(spec, server, workers))
        cpu, overflows = server.cpu_seconds(), listen_overflows()
        replies = [reply["go"] for reply in pool.command("go")]
        outcome = Outcome(spec.count)
        outcome.server_cpu = server.cpu_seconds() - cpu
        outcome.overflows = listen_overflows() - overflows
        for reply in replies:
            outcome.latency.merge(Histogram(reply["latency"]))
        outcome.connected = sum(r["connected"] for r in replies)
        outcome.seconds = max(r["finished"] for r in replies) - min(r["started"] for r in replies)
        outcome.loadgen_cpu = sum(r["cpu"] for r in replies)
        time.sleep(spec.settle)
        outcome.rss_per_connection = (server.rss_bytes() - before) / spec.count
        for report in pool.command("report"):
            for error, n in report["report"]["errors"].items():
                outcome.errors[error] = outcome.errors.get(error, 0) + n
        return outcome
    finally:
        if pool is not None:
            pool.stop()
        server.stop()


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full
    (all of loopback; only the benchmark's server is listening)."""
    with open("/proc/net/netstat") as f:
        header, values = [line.split() for line in f if line.startswith("TcpExt:")][:2]
    return int(values[header.index("ListenOverflows")])


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    return median(outcomes, lambda o: o.rate)


def rows(base: Outcome, ours: Outcome) -> list[tuple]:
    """(metric, relay, daemon, ratio) rows for one connection count."""
    rss_ratio = ratio(ours.rss_per_connection, base.rss_per_connection)
    if ours.count == RSS_TARGET_AT:
        rss_ratio += f" (target ≤ {RSS_TARGET:g}×)"
    per_connect = [o.server_cpu / o.count * 1e3 for o in (base, ours)]
    return [
        ("RSS per connection", f"{base.rss_per_connection / 1024:.1f} KiB",
         f"{ours.rss_per_connection / 1024:.1f} KiB", rss_ratio),
        ("connect rate (TLS, login, join)", f"{base.rate:,.0f}/s", f"{ours.rate:,.0f}/s",
         ratio(ours.rate, base.rate) + f" (target ≥ {RATE_TARGET:g}×)"),
        ("server CPU per connect", f"{per_connect[0]:.2f} ms", f"{per_connect[1]:.2f} ms",
         ratio(per_connect[1], per_connect[0])),
        # On two cores the load generator's half of every handshake and login
        # slows the server's: this is the rate its own CPU time would allow.
        ("connect rate the server's CPU allows", f"{1e3 / per_connect[0]:,.0f}/s",
         f"{1e3 / per_connect[1]:,.0f}/s", ratio(per_connect[0], per_connect[1])),
        *((f"connect time {name}", ms(base.latency.percentile(fraction)),
           ms(ours.latency.percentile(fraction)), "")
          for name, fraction in (("p50", 0.5), ("p99", 0.99))),
        ("listen queue overflows", f"{base.overflows:,}", f"{ours.overflows:,}", ""),
        ("load generator CPU", f"{base.loadgen_cpu:.1f} s", f"{ours.loadgen_cpu:.1f} s", ""),
        ("failures", f"{base.failures:,}{_detail(base)}", f"{ours.failures:,}{_detail(ours)}",
         "target 0"),
    ]


def _detail(outcome: Outcome) -> str:
    return " (" + ", ".join(f"{k}: {v}" for k, v in sorted(outcome.errors.items())) + ")" \
        if outcome.errors else ""


if __name__ == "__main__":
    serve(IdleWorker)
