"""Smoke test for benchmarks/: the harness still runs end to end (relay and
daemon, load generator workers, every scenario, table and plot). Speed is
measured by `make bench`, never here; what is checked is that every message,
connection and page the scenarios count really arrived."""

import importlib.util
import re

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from benchmarks import run


class HarnessSmokeTests(TestCase):
    timeout = 180

    def test_tiny_scenarios_against_both_servers(self):
        """Tiny versions of the fanout, connections and history scenarios: every
        message is delivered through both servers, every connection logs in and
        joins with no failure, and the catch-up receives every missed message;
        the Markdown table has the ratios, the sweep and the client crypto costs."""
        out = self.mktemp() + ".md"

        def check(code):
            self.assertEqual(code, 0)
            with open(out) as f:
                table = f.read()
            delivered = re.search(r"\| fanout-smoke \| delivered / expected \| (\d+) / (\d+) \|"
                                  r" (\d+) / (\d+) \|", table)
            relay, relay_expected, ours, ours_expected = map(int, delivered.groups())
            # 50 messages in a second, each to the 2 other members of its room:
            # about 100 deliveries, every single one of which must arrive.
            self.assertGreater(relay, 80)
            self.assertEqual(relay, relay_expected)
            self.assertGreater(ours, 80)
            self.assertEqual(ours, ours_expected)
            self.assertIn("| fanout-smoke | errors | {} | {} |", table)
            self.assertIn("p99 latency", table)
            self.assertIn("| connections-40 | failures | 0 | 0 |", table)
            self.assertIn("| connections-40 | RSS per connection |", table)
            self.assertIn("| history | caught up / missed | n/a | 500 / 500 |", table)
            self.assertIn("| history | errors | n/a | {} |", table)
            self.assertIn("| 50 | ", table)
            self.assertIn("key rotation for 5 members", table)
            crossed = re.search(r"\| fanout-smoke, PostgreSQL \| delivered / expected \| (\d+) / (\d+)"
                                r" \| (\d+) / (\d+) \|", table)
            one, one_expected, two, two_expected = map(int, crossed.groups())
            self.assertGreater(two, 80)
            self.assertEqual((one, two), (one_expected, two_expected))
            self.assertIn("| fanout-smoke, PostgreSQL | errors | {} | {} |", table)
            if importlib.util.find_spec("matplotlib"):
                with open(out[:-3] + ".png", "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        d = threads.deferToThread(run.main, ["--size", "smoke", "--workers", "1", "--out", out])
        return d.addCallback(check)

    def test_sizes_say_what_they_leave_out(self):
        """Every size names itself in the table's header, and the short one that
        `make bench` runs has every scenario of the issue."""
        short = run.SIZES["short"]
        self.assertEqual([s.name for s in short.fanout], ["fanout-max", "fanout-1k", "fanout-3k"])
        self.assertEqual([c.count for c in short.connections], [1000, 5000, 10000])
        self.assertEqual(short.history.messages, 1_000_000)
        for spec in run.SIZES.values():
            self.assertTrue(spec.summary)
