"""Tests for securechat.client.connector: when the client retries, and what
it says about why."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.connector import STABLE_CONNECTION_SECONDS, ReconnectPolicy


def doubling(attempt: int) -> float:
    return 2.0 ** attempt


class ReconnectPolicyTests(SynchronousTestCase):
    def test_cut_right_after_login_backs_off_further_each_time(self):
        """A connection dropped before it worked is a failure like a refused one: the
        attempt count rises and so does the wait, though each TCP connect succeeded
        (Twisted's own count starts again at 1 after every connect)."""
        policy = ReconnectPolicy(doubling)
        waits = []
        for n in range(4):
            policy.lost(n * 10.0, "Connection was closed cleanly.")
            waits.append(policy.delay(1))
        self.assertEqual(waits, [(2.0, 1), (4.0, 2), (8.0, 3), (16.0, 4)])
        self.assertEqual(policy.reason,
                         "Connection was closed cleanly. (before the client had caught up)")

    def test_a_working_connection_starts_afresh(self):
        """Lost after it had been caught up for a while, a connection counts as having
        worked: the next retry is the first again."""
        policy = ReconnectPolicy(doubling)
        for _ in range(3):
            policy.lost(0.0, "refused")
        policy.synced(100.0)
        policy.lost(100.0 + STABLE_CONNECTION_SECONDS, "Connection lost.")
        self.assertEqual(policy.delay(1), (2.0, 1))
        self.assertEqual(policy.reason, "Connection lost.")

    def test_lost_soon_after_catching_up_is_still_a_failure(self):
        """A connection that catches up and is dropped a moment later does not reset
        the count: a server dropping everyone after the sync cannot make them hammer it."""
        policy = ReconnectPolicy(doubling)
        for n in range(3):
            policy.synced(n * 10.0)
            policy.lost(n * 10.0 + 1, "Connection lost.")
        self.assertEqual(policy.delay(1), (8.0, 3))

    def test_says_what_the_server_said(self):
        """An unprompted error from the server just before the close is part of the reason."""
        policy = ReconnectPolicy(doubling)
        policy.server_said("PING_TIMEOUT", "no answer to PING; closing")
        policy.lost(0.0, "Connection was closed cleanly.")
        self.assertIn("the server said PING_TIMEOUT: no answer to PING; closing", policy.reason)
