"""securechat's test suite; run with ``python -m twisted.trial tests``."""

from twisted.trial import util

# Nothing here should take long; a hang should fail fast rather than stall CI.
util.DEFAULT_TIMEOUT_DURATION = 30.0
