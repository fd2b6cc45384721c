"""Tests for securechat.ratelimit."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.ratelimit import TokenBucket


class TokenBucketTests(SynchronousTestCase):
    def test_burst_then_rate(self):
        """A full bucket allows its burst at once, then refills at its rate."""
        bucket = TokenBucket(rate=2, burst=3, now=0)
        self.assertEqual([bucket.take(0) for _ in range(4)], [True, True, True, False])
        self.assertEqual(bucket.delay(0), 0.5)
        self.assertFalse(bucket.take(0.4))
        self.assertTrue(bucket.take(0.5))

    def test_never_above_burst(self):
        """A long idle time refills no more than the burst."""
        bucket = TokenBucket(rate=10, burst=2, now=0)
        self.assertEqual(sum(bucket.take(1000) for _ in range(5)), 2)

    def test_invalid(self):
        """A zero rate or an empty burst is refused."""
        self.assertRaises(ValueError, TokenBucket, 0, 1, 0)
        self.assertRaises(ValueError, TokenBucket, 1, 0, 0)

    def test_waiting_the_delay_always_pays_out(self):
        """After waiting exactly delay(), a token is there, whatever the float rounding."""
        bucket = TokenBucket(rate=180.0, burst=356.0, now=1000.123)
        now = 1000.123
        for _ in range(2000):
            if not bucket.take(now):
                wait = bucket.delay(now)
                self.assertGreater(wait, 0)
                now += wait
                self.assertTrue(bucket.take(now))
