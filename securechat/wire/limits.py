"""The limits a server announces at login, and how a client reads them.

The server tells each client, in a ``LIMITS`` line before its login's OK,
what it will accept: its flood limits, its line limit, the largest message,
and how many bytes of messages it stores per user. A client that keeps to
them is never refused for size or pace. The line carries ``name=value``
pairs, so a newer server may add limits that an older client ignores.
"""

from dataclasses import MISSING, dataclass, fields

from securechat.wire.errors import Code, WireError


@dataclass(frozen=True)
class AnnouncedLimits:
    """What one server accepts from one user. A byte budget of 0 means none."""

    lines_per_second: float
    line_burst: int
    max_line: int
    max_message_bytes: int
    store_bytes_per_second: int = 0
    store_burst_bytes: int = 0
    store_bytes_per_day: int = 0

    def encode(self) -> str:
        """The ``LIMITS`` line's argument."""
        return " ".join(f"{f.name}={_number(getattr(self, f.name))}" for f in fields(self))

    @classmethod
    def parse(cls, text: str) -> "AnnouncedLimits":
        """Read a ``LIMITS`` argument; unknown names are skipped.

        @raise WireError: BAD_ARGUMENTS for a malformed pair, a negative or
            missing value.
        """
        known = {f.name: f for f in fields(cls)}
        values = {}
        for pair in text.split():
            name, equals, value = pair.partition("=")
            if not equals:
                raise WireError(Code.BAD_ARGUMENTS, f"LIMITS: {pair!r} is not name=value")
            if name not in known:
                continue
            try:
                number = known[name].type(value)
            except ValueError:
                raise WireError(Code.BAD_ARGUMENTS, f"LIMITS: {name} is not a number") from None
            if not 0 <= number < float("inf"):
                raise WireError(Code.BAD_ARGUMENTS, f"LIMITS: {name} is out of range")
            values[name] = number
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
        if missing:
            raise WireError(Code.BAD_ARGUMENTS, f"LIMITS: {', '.join(missing)} missing")
        return cls(**values)


def _number(value: float) -> str:
    """A value as the line writes it: integers plainly, others as short as exact."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
