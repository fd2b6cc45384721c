"""``make bench``: every server scenario against the bare relay and the daemon,
each run on a freshly started server, each row the median of its runs,
printed and written as a Markdown table of ratios to the relay, with a plot
of latency against load next to it.

``--size full`` runs everything at length; ``short`` (what ``make bench``
runs) fits in five minutes on two cores; ``smoke`` is for the test suite.
The table's heading says what the size left out. The first run also makes
what later runs reuse (identities, prepared daemon data dirs) in
benchmarks/.cache, and says so.

    python -m benchmarks.run [--size full|short|smoke] [--out benchmarks/latest.md]
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass

from benchmarks import (
    connections,
    crypto_costs,
    fanout,
    history,
    identities,
    paste,
    plot,
    roomlog,
    scaleout,
)
from benchmarks.fanout import Scenario
from benchmarks.processes import ROOT
from benchmarks.report import Table, ms

KINDS = ("relay", "daemon")


@dataclass(frozen=True)
class Size:
    summary: str  # what this size means, for the table's heading
    runs: int  # per closed-loop fanout row
    fanout: tuple[Scenario, ...]
    sweep: tuple[float, ...]  # offered loads for the plot, beside the fixed-rate rows
    rate_runs: int  # per fixed-rate row and sweep point
    connections: tuple[connections.Spec, ...]
    connection_runs: int
    history: history.Spec
    history_runs: int
    scaleout: Scenario | None = None  # one daemon against two, on PostgreSQL (and Redis)


def _fanout(duration: float, rooms: int = 10, members: int = 20,
            senders: int = 2) -> tuple[Scenario, ...]:
    return (Scenario("fanout-max", rooms, members, senders, "closed", duration),
            Scenario("fanout-1k", rooms, members, senders, "rate", duration, rate=1000),
            Scenario("fanout-3k", rooms, members, senders, "rate", duration, rate=3000))


def _connections(settle: float) -> tuple[connections.Spec, ...]:
    return tuple(connections.Spec(count, settle=settle) for count in (1000, 5000, 10000))


_SMOKE = Scenario("fanout-smoke", 2, 3, 1, "rate", 1.0, rate=50)

SIZES = {
    "full": Size("every row the median of 3 runs; fanout runs of 10 s", 3, _fanout(10.0),
                 (250, 500, 2000), 3, _connections(settle=3.0), 3,
                 history.Spec(1_000_000, 10_000, 200), 3, _fanout(10.0)[1]),
    "short": Size("fanout runs of 2 s, each fanout row and sweep point the median of 3 "
                  "runs; connections and history one run; two daemons only with "
                  "--scenario scaleout", 3,
                  _fanout(2.0), (500,), 3, _connections(settle=1.0), 1,
                  history.Spec(1_000_000, 10_000, 200), 1),
    # For the test suite: proves the harness runs end to end, measures nothing.
    "smoke": Size("a tiny version of each scenario, one run each", 1, (_SMOKE,),
                  (), 1, (connections.Spec(40, accounts=20, settle=0.2, in_flight=20),), 1,
                  history.Spec(2000, 500, 20), 1, _SMOKE),
}


def _fanout_rows(spec: Size, options, table: Table, measured: dict) -> None:
    """The fanout rows; the fixed-rate outcomes go into C{measured} by (server,
    msg/s offered), for the sweep."""
    for scenario in spec.fanout:
        if options.scenario not in (None, scenario.name):
            continue
        runs = options.runs or (spec.runs if scenario.mode == "closed" else spec.rate_runs)
        results = {kind: fanout.median_outcome(
            [fanout.run_once(scenario, kind, options.workers, options.profile)
             for _ in range(runs)]) for kind in KINDS}
        table.rows(scenario.name, fanout.rows(scenario, results["relay"], results["daemon"]))
        if scenario.mode == "rate":
            for kind in KINDS:
                measured[kind, scenario.rate] = (results[kind], runs)


def _sweep(spec: Size, measured: dict, options, table: Table) -> None:
    """Latency at each offered load: the fixed-rate rows, and more loads for the plot."""
    if options.scenario not in (None, "sweep"):
        return
    template = next(s for s in spec.fanout if s.mode == "rate")
    for rate in spec.sweep:
        scenario = template.with_rate(rate)
        for kind in KINDS:
            measured[kind, rate] = (fanout.median_outcome(
                [fanout.run_once(scenario, kind, options.workers)
                 for _ in range(spec.rate_runs)]), spec.rate_runs)
    if not measured:
        return
    # Plotted against the load each server actually took in, which falls short
    # of the offered one once a server (or the load generator) saturates.
    rows, points = [], {kind: [] for kind in KINDS}
    for rate in sorted({rate for _, rate in measured}):
        row = [f"{rate:,.0f}"]
        for kind in KINDS:
            outcome, runs = measured[kind, rate]
            p50, p99 = outcome.latency.percentile(0.5), outcome.latency.percentile(0.99)
            row += [f"{outcome.rate_in:,.0f}", ms(p50), ms(p99)]
            if p50 is not None:
                points[kind].append((outcome.rate_in, p50, p99))
        rows.append(row + [str(runs)])
    table.section(["msg/s offered", "relay: in", "p50", "p99", "securechat: in", "p50", "p99",
                   "runs"], rows)
    path = options.plot or os.path.splitext(options.out)[0] + ".png"
    title = f"delivery latency, {template.rooms} rooms of {template.members}, " \
            f"{template.rooms * template.senders_per_room} senders"
    if plot.write(points, path, title):
        print(f"plot written to {path}")


def _timed(step, *args) -> None:
    """Run a step of the report and say how long it took (the budget of
    `make bench` is five minutes)."""
    started = time.monotonic()
    step(*args)
    print(f"({step.__name__.strip('_').replace('_', ' ')}: {time.monotonic() - started:.0f} s)",
          flush=True)


def _connection_rows(spec: Size, options, table: Table) -> None:
    if options.scenario not in (None, "connections"):
        return
    for each in spec.connections:
        results = {kind: connections.median_outcome(
            [connections.run_once(each, kind, options.workers)
             for _ in range(spec.connection_runs)]) for kind in KINDS}
        table.rows(each.name, connections.rows(results["relay"], results["daemon"]))


def _history_rows(spec: Size, options, table: Table) -> None:
    if options.scenario not in (None, "history"):
        return
    outcome = history.median_outcome([history.run_once(spec.history)
                                      for _ in range(spec.history_runs)])
    table.rows("history", history.rows(spec.history, outcome))


def _scaleout_rows(spec: Size, options, table: Table) -> None:
    """One daemon against two (PostgreSQL for both, Redis between the two)."""
    scenario = spec.scaleout or (SIZES["full"].scaleout if options.scenario == "scaleout"
                                 else None)
    if scenario is None or options.scenario not in (None, "scaleout"):
        return
    one, two = (fanout.median_outcome([scaleout.run_once(scenario, daemons, options.workers)
                                       for _ in range(spec.rate_runs)]) for daemons in (1, 2))
    table.section(["scale-out", "metric", "one daemon", "two daemons", "ratio"],
                  [[f"{scenario.name}, PostgreSQL", *row]
                   for row in scaleout.rows(scenario, one, two)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="short")
    parser.add_argument("--runs", type=int, help="runs per fanout row (default: the size's)")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "latest.md"))
    parser.add_argument("--plot", help="where the PNG goes (default: next to --out)")
    parser.add_argument("--scenario", help="run only this fanout scenario, or 'sweep', "
                                           "'connections', 'history' or 'scaleout'")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="record each fanout server with py-spy (the thread holding "
                             "the GIL, 400 Hz) into PREFIX-scenario-server.folded "
                             "(collapsed stacks)")
    options = parser.parse_args(argv)
    spec = SIZES[options.size]
    started = time.monotonic()
    identities.ensure(max([s.clients for s in spec.fanout]
                          + [each.used_accounts for each in spec.connections]))
    # What is cached is made first, and said: the first time it takes a minute or two.
    for each in spec.connections if options.scenario in (None, "connections") else ():
        connections.ensure(each)
    if options.scenario in (None, "history"):
        history.ensure(spec.history)
    table = Table(f"securechat benchmarks ({options.size}: {spec.summary}; "
                  f"{os.cpu_count()} cores)")
    measured = {}
    _timed(_fanout_rows, spec, options, table, measured)
    _timed(_connection_rows, spec, options, table)
    _timed(_history_rows, spec, options, table)
    _timed(_sweep, spec, measured, options, table)
    _timed(_scaleout_rows, spec, options, table)
    table.section(["client crypto", "cost"], [list(row) for row in crypto_costs.measure(
        members=500 if options.size != "smoke" else 5)])
    table.section(["room logs", "cost"], [list(row) for row in roomlog.measure(
        *((10_000, 500) if options.size != "smoke" else (60, 5)))])
    table.section(["console", "time", "target"], [list(row) for row in paste.measure()])
    table.write(options.out)
    print(f"written to {options.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
