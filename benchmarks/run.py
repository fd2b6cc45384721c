"""``make bench``: every server scenario against the bare relay and the daemon,
each row the median of three runs on a freshly started server, printed and
written as a Markdown table of ratios to the relay.

    python -m benchmarks.run [--short | --smoke] [--out benchmarks/latest.md]
"""

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from benchmarks import crypto_costs, identities
from benchmarks.loadgen import Histogram

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_READY = re.compile(rb"listening on 127\.0\.0\.1:(\d+).*?Fingerprint=([0-9A-F:]{95})", re.S)
_TICKS = os.sysconf("SC_CLK_TCK")


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


@dataclass
class Server:
    kind: str
    process: subprocess.Popen
    port: int
    fingerprint: str
    workdir: str

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_server(kind: str) -> Server:
    """A fresh relay or daemon on a free port, with an empty data dir."""
    workdir = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    if kind == "relay":
        args = [sys.executable, "-m", "benchmarks.relay", "0", workdir]
    else:
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", "securechat", "--interface", "127.0.0.1",
                "--port", "0", "--data-dir", workdir]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=_environment(), cwd=ROOT)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        line = process.stdout.readline() if ready else b""
        if not line:
            break
        output += line
        match = _READY.search(output)
        if match:
            # Drain the rest of its output in the background so it never blocks.
            subprocess.Popen(["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL)
            return Server(kind, process, int(match.group(1)), match.group(2).decode(), workdir)
    process.kill()
    raise RuntimeError(f"{kind} did not start:\n{output.decode(errors='replace')}")


def plan_workers(scenario: Scenario, server: Server, workers: int) -> list[dict]:
    """Whole rooms per worker, so that each room's key rotations stay in one process."""
    plans = []
    for worker in range(workers):
        rooms = []
        for room in range(worker, scenario.rooms, workers):
            members = []
            for member in range(scenario.members):
                index = room * scenario.members + member
                # One loopback source address per client: the daemon's per-IP limit
                # stays as configured for real use.
                bind = f"127.0.{1 + index // 250}.{1 + index % 250}"
                members.append((f"u{index}", index, bind))
            rooms.append({"name": f"#bench{room}", "members": members})
        if not rooms:
            continue
        expected = (scenario.rate * scenario.duration / scenario.rooms if scenario.mode == "rate"
                    else 40_000 * scenario.duration / scenario.rooms)
        plans.append({
            "server": server.kind, "host": "127.0.0.1", "port": server.port,
            "fingerprint": server.fingerprint, "rooms": rooms,
            "senders_per_room": scenario.senders_per_room, "mode": scenario.mode,
            "rate": scenario.rate * len(rooms) / scenario.rooms, "window": scenario.window,
            "duration": scenario.duration, "drain": 5.0, "token_bytes": scenario.token_bytes,
            "epochs": int(expected / 100 * 1.5) + 10,
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


def run_once(scenario: Scenario, kind: str, workers: int, profile: str | None = None) -> Outcome:
    server = start_server(kind)
    processes = []
    spy = None
    try:
        for plan in plan_workers(scenario, server, workers):
            process = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       env=_environment(), cwd=ROOT)
            process.stdin.write(json.dumps(plan).encode() + b"\n")
            process.stdin.flush()
            processes.append(process)
        for process in processes:
            reply = json.loads(process.stdout.readline() or b'{"error": "worker died"}')
            if "error" in reply:
                raise RuntimeError(f"load generator: {reply['error']}")
        if profile:
            spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "--format", "raw", "-o",
                                    f"{profile}-{scenario.name}-{kind}.folded",
                                    "--pid", str(server.process.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        for process in processes:
            process.stdin.write(b"go\n")
            process.stdin.flush()
        outcome = Outcome()
        for process in processes:
            reply = json.loads(process.stdout.readline() or b'{"error": "worker died"}')
            if "error" in reply:
                raise RuntimeError(f"load generator: {reply['error']}")
            figures = reply["figures"]
            outcome.delivered += figures["delivered"]
            outcome.expected += figures["expected"]
            outcome.sent += figures["sent"]
            outcome.loadgen_cpu += figures["cpu"]
            outcome.latency.merge(Histogram(figures["latency"]))
            for code, count in figures["errors"].items():
                outcome.errors[code] = outcome.errors.get(code, 0) + count
        outcome.seconds = min(time.monotonic() - started, scenario.duration) or 1.0
        outcome.server_cpu = server.cpu_seconds() - cpu_before
        outcome.rss = server.rss_bytes()
        return outcome
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        for process in processes:
            process.kill()
            process.wait()
        server.stop()


def median_outcome(outcomes: list[Outcome]) -> Outcome:
    """The run with the median delivery rate (its figures stay consistent together)."""
    return sorted(outcomes, key=lambda o: o.rate)[len(outcomes) // 2]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}×" if base else "-"


def scenario_rows(scenario: Scenario, base: Outcome, ours: Outcome) -> list[tuple]:
    rows = []
    if scenario.mode == "closed":
        rows.append(("delivered msg/s", f"{base.rate:,.0f}", f"{ours.rate:,.0f}",
                     _ratio(ours.rate, base.rate)))
        base_us = base.server_cpu / base.delivered * 1e6 if base.delivered else 0
        ours_us = ours.server_cpu / ours.delivered * 1e6 if ours.delivered else 0
        rows.append(("server CPU µs per delivery", f"{base_us:.1f}", f"{ours_us:.1f}",
                     _ratio(ours_us, base_us)))
        rows.append(("server RSS", f"{base.rss / 2**20:.0f} MiB", f"{ours.rss / 2**20:.0f} MiB",
                     _ratio(ours.rss, base.rss)))
    else:
        rows.append(("server CPU", f"{base.server_cpu / scenario.duration:.0%}",
                     f"{ours.server_cpu / scenario.duration:.0%}",
                     _ratio(ours.server_cpu, base.server_cpu)))
        rows.append(("delivered / expected", f"{base.delivered:,} / {base.expected:,}",
                     f"{ours.delivered:,} / {ours.expected:,}", ""))
    for name, fraction in (("p50 latency", 0.5), ("p99 latency", 0.99)):
        b, o = base.latency.percentile(fraction), ours.latency.percentile(fraction)
        rows.append((name, _ms(b), _ms(o), _ratio(o or 0, b or 0)))
    rows.append(("load generator CPU", f"{base.loadgen_cpu:.1f} s", f"{ours.loadgen_cpu:.1f} s",
                 ""))
    if ours.errors or base.errors:
        rows.append(("errors", json.dumps(base.errors), json.dumps(ours.errors), ""))
    return rows


SCENARIOS = {
    "full": [
        Scenario("fanout-max", 10, 20, 2, "closed", 10.0),
        Scenario("fanout-1k", 10, 20, 2, "rate", 10.0, rate=1000),
        Scenario("fanout-3k", 10, 20, 2, "rate", 10.0, rate=3000),
    ],
    "short": [
        Scenario("fanout-max", 10, 20, 2, "closed", 4.0),
        Scenario("fanout-1k", 10, 20, 2, "rate", 4.0, rate=1000),
        Scenario("fanout-3k", 10, 20, 2, "rate", 4.0, rate=3000),
    ],
    # For the test suite: proves the harness runs end to end, measures nothing.
    "smoke": [
        Scenario("fanout-smoke", 2, 3, 1, "rate", 1.0, rate=50),
    ],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__)
    parser.add_argument("--size", choices=sorted(SCENARIOS), default="short")
    parser.add_argument("--runs", type=int, default=3, help="runs per row; the median counts")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "latest.md"))
    parser.add_argument("--scenario", help="run only this scenario")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="record each server with py-spy into PREFIX-scenario-server.folded (collapsed stacks)")
    options = parser.parse_args(argv)
    lines = [f"# securechat benchmarks ({options.size}, median of {options.runs} runs, "
             f"{os.cpu_count()} cores)", "",
             "| scenario | metric | bare relay | securechat | ratio |", "|---|---|---|---|---|"]
    identities.ensure(max(s.rooms * s.members for s in SCENARIOS[options.size]))
    for scenario in SCENARIOS[options.size]:
        if options.scenario and scenario.name != options.scenario:
            continue
        results = {}
        for kind in ("relay", "daemon"):
            outcomes = [run_once(scenario, kind, options.workers, options.profile)
                        for _ in range(options.runs)]
            results[kind] = median_outcome(outcomes)
        for metric, base, ours, ratio in scenario_rows(scenario, results["relay"],
                                                       results["daemon"]):
            lines.append(f"| {scenario.name} | {metric} | {base} | {ours} | {ratio} |")
        print("\n".join(lines[-len(scenario_rows(scenario, results['relay'],
                                                    results['daemon'])):]), flush=True)
    lines += ["", "| client crypto | cost |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in crypto_costs.measure(
        members=500 if options.size != "smoke" else 5)]
    with open(options.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"written to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
