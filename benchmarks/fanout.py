"""The fanout scenarios: rooms of members, a few senders each, run closed-loop
(as fast as a window of unacknowledged messages allows) or at a fixed rate.
Every delivery is timed from the send time stamped in its token."""

import json
import subprocess
import time
from dataclasses import dataclass, field

from benchmarks.loadgen import Histogram
from benchmarks.processes import Workers, source_address, start_server
from benchmarks.report import median, ms, ratio
from securechat.client.limits import PACING_MARGIN
from securechat.constants import RATE_LINES_PER_SECOND, ROTATE_AFTER_MESSAGES

# Closed-loop messages per second the relay may take in (it has no limit);
# only used to sign enough epoch records in advance, with margin.
RELAY_CEILING = 40_000


@dataclass(frozen=True)
class Scenario:
    name: str
    rooms: int
    members: int
    senders_per_room: int
    mode: str  # closed: a window of unacknowledged messages; rate: a fixed total rate
    duration: float
    rate: float = 0.0
    window: int = 100
    token_bytes: int = 300

    @property
    def clients(self) -> int:
        return self.rooms * self.members

    def with_rate(self, rate: float) -> "Scenario":
        return Scenario(f"{self.name}@{rate:g}", self.rooms, self.members,
                        self.senders_per_room, "rate", self.duration, rate)


def ceiling_note(scenario: Scenario) -> str:
    """What the daemon's per-connection flood limit allows a closed loop at most."""
    senders = scenario.rooms * scenario.senders_per_room
    deliveries = senders * RATE_LINES_PER_SECOND * (scenario.members - 1)
    return (f"daemon ceiling: its flood limit ({RATE_LINES_PER_SECOND} lines/s per connection) "
            f"caps it at {senders} × {RATE_LINES_PER_SECOND} msg/s in ({deliveries:,} "
            f"deliveries/s); clients pace at {PACING_MARGIN:g} of it "
            f"({deliveries * PACING_MARGIN:,.0f})")


def plan_workers(scenario: Scenario, server, workers: int) -> list[dict]:
    """Whole rooms per worker, so that each room's key rotations stay in one process."""
    plans = []
    for worker in range(workers):
        rooms = []
        for room in range(worker, scenario.rooms, workers):
            members = []
            for member in range(scenario.members):
                index = room * scenario.members + member
                members.append((f"u{index}", index, source_address(index)))
            rooms.append({"name": f"#bench{room}", "members": members})
        if not rooms:
            continue
        if scenario.mode == "rate":
            per_room = scenario.rate * scenario.duration / scenario.rooms
        elif server.kind == "daemon":
            per_room = scenario.senders_per_room * RATE_LINES_PER_SECOND * scenario.duration
        else:
            per_room = RELAY_CEILING * scenario.duration / scenario.rooms
        plans.append({
            "server": server.kind, "host": "127.0.0.1", "port": server.port,
            "fingerprint": server.fingerprint, "rooms": rooms,
            "senders_per_room": scenario.senders_per_room, "mode": scenario.mode,
            "rate": scenario.rate * len(rooms) / scenario.rooms, "window": scenario.window,
            "duration": scenario.duration, "drain": 5.0, "token_bytes": scenario.token_bytes,
            "epochs": int(per_room / ROTATE_AFTER_MESSAGES * 1.5) + 10,
        })
    return plans


@dataclass
class Outcome:
    delivered: int = 0
    expected: int = 0
    sent: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    rss: int = 0
    errors: dict = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def add(self, figures: dict) -> None:
        """One worker's figures, summed in."""
        self.delivered += figures["delivered"]
        self.expected += figures["expected"]
        self.sent += figures["sent"]
        self.loadgen_cpu += figures["cpu"]
        self.latency.merge(Histogram(figures["latency"]))
        for code, count in figures["errors"].items():
            self.errors[code] = self.errors.get(code, 0) + count

    @property
    def rate_in(self) -> float:
        """Messages per second the senders had acknowledged."""
        return self.sent / self.seconds if self.seconds else 0.0


def run_once(scenario: Scenario, kind: str, workers: int, profile: str | None = None) -> Outcome:
    server = start_server(kind)
    pool = spy = None
    try:
        pool = Workers("benchmarks.loadgen", plan_workers(scenario, server, workers))
        if profile:
            # Only the thread holding the GIL, 400 times a second: where the
            # Python CPU goes, with enough samples in a two-second run.
            spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "--rate", "400", "--gil",
                                    "--format", "raw", "-o",
                                    f"{profile}-{scenario.name}-{kind}.folded",
                                    "--pid", str(server.process.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        outcome = Outcome()
        for reply in pool.command("go"):
            outcome.add(reply["go"])
        outcome.seconds = min(time.monotonic() - started, scenario.duration) or 1.0
        outcome.server_cpu = server.cpu_seconds() - cpu_before
        outcome.rss = server.rss_bytes()
        return outcome
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        if pool is not None:
            pool.stop()
        server.stop()


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    return median(outcomes, lambda o: o.rate)


def rows(scenario: Scenario, base: Outcome, ours: Outcome) -> list[tuple]:
    """(metric, relay, daemon, ratio) rows for the table."""
    table = []
    if scenario.mode == "closed":
        table.append(("delivered msg/s", f"{base.rate:,.0f}", f"{ours.rate:,.0f}",
                      ratio(ours.rate, base.rate)))
        base_us = base.server_cpu / base.delivered * 1e6 if base.delivered else 0
        ours_us = ours.server_cpu / ours.delivered * 1e6 if ours.delivered else 0
        table.append(("server CPU µs per delivery", f"{base_us:.1f}", f"{ours_us:.1f}",
                      ratio(ours_us, base_us)))
        table.append(("server RSS", f"{base.rss / 2**20:.0f} MiB", f"{ours.rss / 2**20:.0f} MiB",
                      ratio(ours.rss, base.rss)))
    else:
        table.append((f"msg/s in (offered {scenario.rate:,.0f})", f"{base.rate_in:,.0f}",
                      f"{ours.rate_in:,.0f}", ratio(ours.rate_in, base.rate_in)))
        table.append(("server CPU", f"{base.server_cpu / scenario.duration:.0%}",
                      f"{ours.server_cpu / scenario.duration:.0%}",
                      ratio(ours.server_cpu, base.server_cpu)))
        table.append(("delivered / expected", f"{base.delivered:,} / {base.expected:,}",
                      f"{ours.delivered:,} / {ours.expected:,}", ""))
    for name, fraction in (("p50 latency", 0.5), ("p99 latency", 0.99)):
        b, o = base.latency.percentile(fraction), ours.latency.percentile(fraction)
        table.append((name, ms(b), ms(o), ratio(o or 0, b or 0)))
    table.append(("load generator CPU", f"{base.loadgen_cpu:.1f} s", f"{ours.loadgen_cpu:.1f} s",
                  ""))
    table.append(("errors", json.dumps(base.errors), json.dumps(ours.errors), ""))
    if scenario.mode == "closed":
        table.append(("note", "", ceiling_note(scenario), ""))
    return table
