# -*- test-case-name: tests.test_ratelimit -*-
"""A token bucket, shared by the server (flood control) and the client
(pacing to the limits the server announced), so both count the same way."""

# Tolerance for floating-point refills: a bucket a hair short of a token
# after exactly the advertised delay still pays out, and a wait is never so
# short that adding it to the clock changes nothing (which would spin).
_EPSILON = 1e-9
_MINIMUM_DELAY = 0.001


class TokenBucket:
    """C{burst} tokens at most, refilled at C{rate} per second; time is passed in."""

    def __init__(self, rate: float, burst: float, now: float):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self._tokens >= 1 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1)
            return True
        return False

    def delay(self, now: float) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill(now)
        if self._tokens >= 1 - _EPSILON:
            return 0.0
        return max(_MINIMUM_DELAY, (1 - self._tokens) / self.rate)
