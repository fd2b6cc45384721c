# -*- test-case-name: tests.test_client_keyring -*-
"""The room keys a client holds, and the records that vouch for them.

A key is kept only once it is shown to be the one its epoch's signed record
commits to; a key that arrives before its record waits for it. In rooms
with shared history, a newer key unlocks older ones through the records'
chain. Pure: no I/O; serialised into the encrypted state file.
"""

from dataclasses import dataclass

from securechat.crypto.identity import PrivateIdentity, PublicIdentity
from securechat.crypto.roomkeys import EpochRecord, RoomKeyError, unwrap_key
from securechat.names import fold
from securechat.wire import b64decode, b64encode


@dataclass(frozen=True)
class SignedRecord:
    record: EpochRecord
    signature: bytes
    rotator: str


class RoomKeyring:
    def __init__(self, data: dict | None = None):
        data = data or {}
        self._keys: dict[tuple[str, int], bytes] = {}
        self._records: dict[tuple[str, int], SignedRecord] = {}
        self._unchecked: dict[tuple[str, int], bytes] = {}
        for name, key in data.get("keys", {}).items():
            room, epoch = name.rsplit("|", 1)
            self._keys[(room, int(epoch))] = key.encode()
        for name, (record, signature, rotator) in data.get("records", {}).items():
            room, epoch = name.rsplit("|", 1)
            self._records[(room, int(epoch))] = SignedRecord(
                EpochRecord.decode(b64decode(record)), b64decode(signature), rotator
            )

    def to_dict(self) -> dict:
        return {
            "keys": {f"{r}|{e}": k.decode() for (r, e), k in self._keys.items()},
            "records": {
                f"{r}|{e}": [b64encode(s.record.encode()), b64encode(s.signature), s.rotator]
                for (r, e), s in self._records.items()
            },
        }

    # -- records ---------------------------------------------------------------

    def record(self, room: str, epoch: int) -> SignedRecord | None:
        return self._records.get((fold(room), epoch))

    def add_record(self, room: str, epoch: int, data: bytes, signature: bytes, rotator: str,
                   rotator_identity: PublicIdentity) -> EpochRecord:
        """Accept a signed epoch record after checking it names this room and
        epoch, is signed by its rotator, and chains to the record before it.

        @raise RoomKeyError: with a reason fit to show the user.
        """
        record = EpochRecord.decode(data)
        if (fold(record.room), record.epoch) != (fold(room), epoch):
            raise RoomKeyError(f"an epoch record for {room} {epoch} names another room or epoch")
        if not record.verify(signature, rotator_identity):
            raise RoomKeyError(f"the epoch {epoch} record of {room} is not signed by {rotator}")
        previous = self.record(room, epoch - 1)
        if previous is not None and record.prev_hash != previous.record.hash():
            raise RoomKeyError(f"epoch {epoch} of {room} does not follow the epoch before it")
        known = self.record(room, epoch)
        if known is not None and known.record != record:
            raise RoomKeyError(f"two different records for epoch {epoch} of {room}")
        self._records[(fold(room), epoch)] = SignedRecord(record, signature, rotator)
        waiting = self._unchecked.pop((fold(room), epoch), None)
        if waiting is not None:
            self._accept_key(room, epoch, waiting)
        return record

    # -- keys ------------------------------------------------------------------

    def add_wrap(self, identity: PrivateIdentity, room: str, epoch: int, wrapped: bytes) -> bool:
        """Unwrap a key sent to us; @return: whether it is now usable (its
        record may not have arrived yet). @raise RoomKeyError: a bad wrap or
        a key other than the one the record commits to."""
        key = unwrap_key(identity, wrapped, room, epoch)
        if self.record(room, epoch) is None:
            self._unchecked[(fold(room), epoch)] = key
            return False
        self._accept_key(room, epoch, key)
        return True

    def add_own_key(self, room: str, epoch: int, key: bytes) -> None:
        """A key we generated ourselves (its record is added by the caller)."""
        self._accept_key(room, epoch, key)

    def _accept_key(self, room: str, epoch: int, key: bytes) -> None:
        self.record(room, epoch).record.check_key(key)
        self._keys[(fold(room), epoch)] = key

    def key(self, room: str, epoch: int) -> bytes | None:
        """The key of an epoch, unlocking it from a later one in shared rooms."""
        found = self._keys.get((fold(room), epoch))
        if found is not None:
            return found
        later = self.record(room, epoch + 1)
        if later is None or not later.record.prev_box:
            return None
        newer = self.key(room, epoch + 1)
        if newer is None:
            return None
        try:
            key = later.record.previous_key(newer)
            if self.record(room, epoch) is not None:
                self.record(room, epoch).record.check_key(key)
        except RoomKeyError:
            return None
        self._keys[(fold(room), epoch)] = key
        return key
