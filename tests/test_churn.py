"""The seeded churn simulation (tests.churn), short: a few seeds of a busy
team on an honest server end with every entitled member able to read, no
leak, nothing lost and no false alarm. ``make churn`` runs the long one."""

from twisted.trial.unittest import SynchronousTestCase

from tests import churn

# Seeds and steps for the suite: enough to cross daemon restarts, offline
# periods and policy switches, quick enough for every run.
SHORT_SEEDS = (1, 2, 3)
SHORT_OPS = 120


class ChurnTests(SynchronousTestCase):
    def test_short_churn(self):
        """Each short seeded schedule ends with no unreadable-but-entitled pair, no
        leak, no lost message and no false alarm."""
        for seed in SHORT_SEEDS:
            verdict = churn.run(seed, SHORT_OPS, self.mktemp())
            self.assertFalse(verdict.failed, verdict.summary())
            self.assertGreater(verdict.pairs, 0, verdict.summary())
