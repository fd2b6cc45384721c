"""What a second daemon adds, and what it costs: the fixed-rate fanout
scenario on one daemon and on two, both on PostgreSQL (daemons that share
rooms share a database), the two joined by Redis. Clients alternate between
the daemons, so every room has members on both and every message crosses.

PostgreSQL and Redis are private servers started for the run (the test
suite's, from tests/services.py), stopped after it. Their CPU is measured
with the daemons': it is what running several daemons costs.
"""

import os
import time
from dataclasses import dataclass

from benchmarks import fanout
from benchmarks.processes import Workers, cpu_seconds, start_server
from benchmarks.report import ms, ratio
from securechat.server.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY
from tests.services import PrivatePostgres, PrivateRedis

SERVER_NAME = "bench.securechat"


@dataclass
class Outcome(fanout.Outcome):
    backend_cpu: float = 0.0  # PostgreSQL and Redis


def run_once(scenario: fanout.Scenario, daemons: int, workers: int) -> Outcome:
    postgres, redis, servers, pool = PrivatePostgres(), None, [], None
    try:
        options = ["--database", postgres.url(postgres.create_database()),
                   "--server-name", SERVER_NAME]
        if daemons > 1:
            redis = PrivateRedis()
            redis.start()
            options += ["--redis", redis.url]
        servers.append(start_server("daemon", options=options))
        first = servers[0].workdir
        for _ in range(daemons - 1):
            servers.append(start_server("daemon", options=[
                *options, "--tls-cert", os.path.join(first, SELF_SIGNED_CERT),
                "--tls-key", os.path.join(first, SELF_SIGNED_KEY)]))
        plans = fanout.plan_workers(scenario, servers[0], workers)
        for plan in plans:
            plan["ports"] = [server.port for server in servers]
        pool = Workers("benchmarks.loadgen", plans)

        def backend() -> float:
            return cpu_seconds(postgres.pid, with_children=True) + (
                cpu_seconds(redis.pid) if redis else 0.0)

        cpu_before, backend_before = sum(s.cpu_seconds() for s in servers), backend()
        started = time.monotonic()
        outcome = Outcome()
        for reply in pool.command("go"):
            outcome.add(reply["go"])
        outcome.seconds = min(time.monotonic() - started, scenario.duration) or 1.0
        outcome.server_cpu = sum(s.cpu_seconds() for s in servers) - cpu_before
        outcome.backend_cpu = backend() - backend_before
        outcome.rss = sum(s.rss_bytes() for s in servers)
        return outcome
    finally:
        if pool is not None:
            pool.stop()
        for server in servers:
            server.stop()
        if redis is not None:
            redis.stop()
        postgres.stop()


def rows(scenario: fanout.Scenario, one: Outcome, two: Outcome) -> list[tuple]:
    """(metric, one daemon, two daemons, ratio) rows."""
    table = [
        (f"msg/s in (offered {scenario.rate:,.0f})", f"{one.rate_in:,.0f}", f"{two.rate_in:,.0f}",
         ratio(two.rate_in, one.rate_in)),
        ("delivered / expected", f"{one.delivered:,} / {one.expected:,}",
         f"{two.delivered:,} / {two.expected:,}", ""),
    ]
    for name, fraction in (("p50 latency", 0.5), ("p99 latency", 0.99)):
        a, b = one.latency.percentile(fraction), two.latency.percentile(fraction)
        table.append((name, ms(a), ms(b), ratio(b or 0, a or 0)))
    table += [
        ("daemons' CPU", f"{one.server_cpu / scenario.duration:.0%}",
         f"{two.server_cpu / scenario.duration:.0%}", ratio(two.server_cpu, one.server_cpu)),
        ("PostgreSQL and Redis CPU", f"{one.backend_cpu / scenario.duration:.0%}",
         f"{two.backend_cpu / scenario.duration:.0%}", ratio(two.backend_cpu, one.backend_cpu)),
        ("daemons' RSS", f"{one.rss / 2**20:.0f} MiB", f"{two.rss / 2**20:.0f} MiB",
         ratio(two.rss, one.rss)),
        ("errors", str(one.errors), str(two.errors), ""),
    ]
    return table
