# -*- test-case-name: tests.test_client_keyring -*-
"""The room keys a client holds, and what vouches for each.

Every epoch's key is committed to (an HMAC of it, the key id) by something
the client checked: the epoch's entry in the room's signed log, or, for
epochs from before the log, the rotator's signed epoch record. A key is
kept only once it matches its commitment; one that arrives first waits for
it. In rooms with shared history a newer key unlocks older ones through
the chain each commitment carries. Pure: no I/O; saved in the encrypted
state file.
"""

from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

from securechat.crypto.identity import PrivateIdentity, PublicIdentity
from securechat.crypto.roomkeys import EpochRecord, RoomKeyError, key_id, unwrap_key
from securechat.names import fold
from securechat.wire import b64decode, b64encode


@dataclass(frozen=True)
class Commitment:
    """What a checked entry or record says of an epoch's key.

    @ivar room: the room's name as the key id and the wraps bind it.
    @ivar prev_box: in shared rooms, the previous key under this one.
    """

    room: str
    epoch: int
    key_id: bytes
    prev_box: bytes = b""

    def check(self, key: bytes) -> None:
        if key_id(key, self.room, self.epoch) != self.key_id:
            raise RoomKeyError(f"the key for {self.room} epoch {self.epoch} is not the one its "
                               f"epoch commits to")

    def previous_key(self, key: bytes) -> bytes:
        try:
            return Fernet(key).decrypt(self.prev_box)
        except InvalidToken:
            raise RoomKeyError("the chained previous key does not decrypt") from None

    def to_list(self) -> list:
        return [self.room, self.epoch, b64encode(self.key_id), b64encode(self.prev_box)]

    @classmethod
    def from_list(cls, data: list) -> "Commitment":
        room, epoch, kid, prev_box = data
        return cls(room, epoch, b64decode(kid), b64decode(prev_box))


class RoomKeyring:
    def __init__(self, data: dict | None = None):
        data = data or {}
        self._keys: dict[tuple[str, int], bytes] = {}
        self._commitments: dict[tuple[str, int], Commitment] = {}
        self._unchecked: dict[tuple[str, int], bytes] = {}
        for name, key in data.get("keys", {}).items():
            room, epoch = name.rsplit("|", 1)
            self._keys[(room, int(epoch))] = key.encode()
        for saved in data.get("commitments", []):
            commitment = Commitment.from_list(saved)
            self._commitments[(fold(commitment.room), commitment.epoch)] = commitment
        for name, (record, _signature, _rotator) in data.get("records", {}).items():
            # A state from before the room logs: its records were checked then.
            legacy = EpochRecord.decode(b64decode(record))
            self._commitments.setdefault((fold(legacy.room), legacy.epoch), Commitment(
                legacy.room, legacy.epoch, legacy.key_id, legacy.prev_box))

    def to_dict(self) -> dict:
        return {
            "keys": {f"{r}|{e}": k.decode() for (r, e), k in self._keys.items()},
            "commitments": [c.to_list() for c in self._commitments.values()],
        }

    # -- commitments -----------------------------------------------------------

    def commitment(self, room: str, epoch: int) -> Commitment | None:
        return self._commitments.get((fold(room), epoch))

    def commit(self, commitment: Commitment) -> None:
        """An epoch's commitment, from a checked log entry or record.

        @raise RoomKeyError: a different one for the same epoch (a split view).
        """
        place = (fold(commitment.room), commitment.epoch)
        known = self._commitments.get(place)
        if known is not None and known != commitment:
            raise RoomKeyError(f"two different keys were announced for epoch "
                               f"{commitment.epoch} of {commitment.room}")
        self._commitments[place] = commitment
        waiting = self._unchecked.pop(place, None)
        if waiting is not None:
            self._accept_key(commitment.room, commitment.epoch, waiting)

    def add_record(self, room: str, epoch: int, data: bytes, signature: bytes,
                   rotator_identity: PublicIdentity) -> EpochRecord:
        """A signed epoch record from before the room's log, checked and committed.

        @raise RoomKeyError: with a reason fit to show the user.
        """
        record = EpochRecord.decode(data)
        if (fold(record.room), record.epoch) != (fold(room), epoch):
            raise RoomKeyError(f"an epoch record for {room} {epoch} names another room or epoch")
        if not record.verify(signature, rotator_identity):
            raise RoomKeyError(f"the epoch {epoch} record of {room} is not signed by its "
                               f"rotator")
        self.commit(Commitment(record.room, record.epoch, record.key_id, record.prev_box))
        return record

    # -- keys ------------------------------------------------------------------

    def add_wrap(self, identity: PrivateIdentity, room: str, epoch: int, wrapped: bytes) -> bool:
        """Unwrap a key sent to us; @return: whether it is now usable (its
        commitment may not have arrived yet). @raise RoomKeyError: a bad wrap,
        or a key other than the one committed to."""
        key = unwrap_key(identity, wrapped, room, epoch)
        if self.commitment(room, epoch) is None:
            self._unchecked[(fold(room), epoch)] = key
            return False
        self._accept_key(room, epoch, key)
        return True

    def add_own_key(self, room: str, epoch: int, key: bytes) -> None:
        """A key we generated ourselves: usable once its epoch's entry commits to it."""
        if self.commitment(room, epoch) is None:
            self._unchecked[(fold(room), epoch)] = key
        else:
            self._accept_key(room, epoch, key)

    def _accept_key(self, room: str, epoch: int, key: bytes) -> None:
        self.commitment(room, epoch).check(key)
        self._keys[(fold(room), epoch)] = key

    def key(self, room: str, epoch: int) -> bytes | None:
        """The key of an epoch, unlocking it from a later one in shared rooms:
        from the nearest later key held, back along the chain, one epoch at a
        time (however long the chain, no recursion)."""
        found = self._keys.get((fold(room), epoch))
        if found is not None:
            return found
        newer = epoch + 1
        while (fold(room), newer) not in self._keys:
            later = self.commitment(room, newer)
            if later is None or not later.prev_box:
                return None
            newer += 1
        key = self._keys[(fold(room), newer)]
        for number in range(newer, epoch, -1):
            try:
                key = self.commitment(room, number).previous_key(key)
                if self.commitment(room, number - 1) is not None:
                    self.commitment(room, number - 1).check(key)
            except RoomKeyError:
                return None
            self._keys[(fold(room), number - 1)] = key
        return key

    def forget_room(self, room: str) -> None:
        """A room deleted: its keys and commitments go (a room of that name made
        later is another room, with epochs of its own)."""
        for place in [p for p in (*self._keys, *self._commitments, *self._unchecked)
                      if p[0] == fold(room)]:
            self._keys.pop(place, None)
            self._commitments.pop(place, None)
            self._unchecked.pop(place, None)
