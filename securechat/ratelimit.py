# -*- test-case-name: tests.test_ratelimit -*-
"""A token bucket, shared by the server (flood control) and the client
(pacing to the limits the server announced), so both count the same way."""

# Tolerance for floating-point refills: a bucket a hair short of a token
# after exactly the advertised delay still pays out, and a wait is never so
# short that adding it to the clock changes nothing (which would spin).
_EPSILON = 1e-9
_MINIMUM_DELAY = 0.001


class TokenBucket:
    """C{burst} tokens at most, refilled at C{rate} per second; time is passed in.

    A take may cost more than one token (bytes, for a storage budget); one
    that costs more than the burst is paid from a full bucket, leaving it in
    debt, so that nothing is refused for ever.
    """

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

    def _needed(self, amount: float) -> float:
        return min(amount, self.burst)

    def take(self, now: float, amount: float = 1) -> bool:
        """Spend C{amount} tokens if there are that many."""
        self._refill(now)
        if self._tokens >= self._needed(amount) - _EPSILON:
            self._tokens = max(0.0, self._tokens - self._needed(amount)) - (amount -
                                                                            self._needed(amount))
            return True
        return False

    def give_back(self, amount: float) -> None:
        """Undo a take whose work was not done after all."""
        self._tokens = min(self.burst, self._tokens + amount)

    def delay(self, now: float, amount: float = 1) -> float:
        """Seconds until C{amount} tokens are available (0 if they are)."""
        self._refill(now)
        if self._tokens >= self._needed(amount) - _EPSILON:
            return 0.0
        return max(_MINIMUM_DELAY, (self._needed(amount) - self._tokens) / self.rate)
