"""Smoke test for benchmarks/: the harness still runs end to end (relay and
daemon, load generator workers, table). Speed is measured by `make bench`,
never here."""

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from benchmarks import run


class HarnessSmokeTests(TestCase):
    timeout = 180

    def test_tiny_scenario_against_both_servers(self):
        """A tiny fixed-rate scenario delivers every message through both servers and
        writes the Markdown table with ratios and the client crypto costs."""
        out = self.mktemp()

        def check(code):
            self.assertEqual(code, 0)
            with open(out) as f:
                table = f.read()
            self.assertIn("| fanout-smoke | delivered / expected | 100 / 100 | 100 / 100 |",
                          table)
            self.assertIn("p99 latency", table)
            self.assertIn("key rotation for 5 members", table)

        d = threads.deferToThread(run.main, ["--size", "smoke", "--runs", "1", "--workers", "1",
                                             "--out", out])
        return d.addCallback(check)
