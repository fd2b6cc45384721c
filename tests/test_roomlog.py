"""Tests for securechat.roomlog: the entries' format and every rule of the
replay, each case by itself, with no server and no sockets."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import HOLDERS_KEPT_EPOCHS
from securechat.roomlog import author
from securechat.roomlog.entry import (
    MAX_ROOM_MEMBERS,
    LogEntry,
    LogError,
    SignedEntry,
    b64,
    keys_body,
    make,
)
from securechat.roomlog.state import RoomState, replay
from securechat.wire.grammar import MAX_ENTRY_BYTES
from tests.identities import identity

ROOM = "#lab"
NOW = 1000

# Each kind's fields, for entries whose values are anything at all.
FIELDS = {
    "genesis": ["nick", "keys", "role", "invite_only", "history", "legacy_epoch", "upgrade"],
    "admit": ["nick", "keys", "role"], "join": ["nick", "keys", "invite"],
    "invite": ["invitee", "nick"], "part": ["reason"], "kick": ["target", "reason"],
    "ban": ["target", "reason"], "unban": ["target"], "role": ["target", "role"],
    "policy": ["invite_only", "history"],
    "epoch": ["epoch", "key_id", "recipients", "prev_box", "restart", "reason"],
    "share": ["epoch", "recipient"], "rekey": ["old", "nick", "keys"],
}
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


# Values of the right shape, so that some entries get as far as each rule.
_PLAUSIBLE = [b64(identity("alice").fingerprint), b64(identity("bob").fingerprint),
              sorted([b64(identity("alice").fingerprint), b64(identity("bob").fingerprint)]),
              keys_body(identity("carol").public), "op", "owner", "member", "shared", "joined",
              "carol", 1, 2, b64(b"k" * 16)]


class Room:
    """A log being written by test identities, with its state after each entry."""

    def __init__(self, creator="alice", **policy):
        self.state = RoomState(room=ROOM)
        self.entries = []
        self.add(author.genesis(identity(creator), ROOM, creator, NOW, **policy))

    def add(self, signed: SignedEntry) -> SignedEntry:
        self.state.apply(signed)
        self.entries.append(signed)
        return signed

    def join(self, name, invite=b""):
        return self.add(author.join(identity(name), self.state, name, NOW, invite))

    def invite(self, by, name):
        return self.add(author.invite(identity(by), self.state, identity(name).public, name,
                                      NOW))

    def fp(self, name) -> bytes:
        return identity(name).fingerprint

    def role(self, by, name, role):
        return self.add(author.role(identity(by), self.state, self.fp(name), role, NOW))

    def epoch(self, by, names, previous_key=None, reason="test"):
        key, signed, wraps = author.epoch(identity(by), self.state,
                                          [identity(n).public for n in names], reason, NOW,
                                          previous_key)
        self.add(signed)
        return key

    def refused(self, test, signed, words):
        before = self.state.to_dict({})
        with test.assertRaises(LogError) as caught:
            self.state.apply(signed)
        test.assertIn(words, caught.exception.reason)
        test.assertEqual(self.state.to_dict({}), before)


class EntryTests(SynchronousTestCase):
    def test_round_trip_and_canonical(self):
        """An entry decodes to itself; anything but its canonical bytes is refused."""
        signed = author.genesis(identity("alice"), ROOM, "alice", NOW)
        data = signed.entry.encode()
        self.assertEqual(LogEntry.decode(data), signed.entry)
        for bad in [data.replace(b'"index":0', b'"index": 0'), data + b" ", b"{}", b"\xff"]:
            self.assertRaises(LogError, LogEntry.decode, bad)

    def test_signature_binds_every_field(self):
        """A changed field no longer verifies against its author."""
        signed = author.genesis(identity("alice"), ROOM, "alice", NOW)
        changed = LogEntry(ROOM, 0, signed.entry.prev, "genesis", signed.entry.author, NOW + 1,
                           signed.entry.body)
        self.assertTrue(signed.entry.verify(signed.signature, identity("alice").public))
        self.assertFalse(changed.verify(signed.signature, identity("alice").public))


class MembershipTests(SynchronousTestCase):
    def test_creator_owns_and_anyone_joins_an_open_room(self):
        """The creator is owner; in an open room a join by anyone makes them a member."""
        room = Room()
        room.join("bob")
        self.assertEqual({m.nick: m.role for m in room.state.members.values()},
                         {"alice": "owner", "bob": "member"})

    def test_join_must_be_signed_by_the_joiner(self):
        """A join carrying one identity's keys and signed by another is refused: the
        server cannot enlist someone who did not sign."""
        room = Room()
        forged = author.join(identity("bob"), room.state, "bob", NOW)
        wrong = SignedEntry(forged.entry, identity("mallory").sign(b"x"))
        room.refused(self, wrong, "not signed by its author")

    def test_nick_belongs_to_one_member(self):
        """A second identity under a member's nick is refused (no aliases)."""
        room = Room()
        room.join("bob")
        room.refused(self, author.join(identity("carol"), room.state, "bob", NOW),
                     "already a member under another key")

    def test_invite_only_needs_an_unspent_invite_for_that_key(self):
        """Uninvited, or with someone else's invite, or an invite already spent: refused."""
        room = Room(invite_only=True)
        room.refused(self, author.join(identity("bob"), room.state, "bob", NOW), "uninvited")
        invite = room.invite("alice", "bob")
        room.refused(self, author.join(identity("carol"), room.state, "carol", NOW,
                                       invite.entry.hash()), "not theirs")
        room.join("bob", invite.entry.hash())
        room.add(author.part(identity("bob"), room.state, "", NOW))
        room.refused(self, author.join(identity("bob"), room.state, "bob", NOW,
                                       invite.entry.hash()), "spent")

    def test_only_ops_invite_kick_and_ban_lower_ranks(self):
        """A member cannot invite or kick; an op cannot kick the owner; a ban removes
        and keeps out, and voids the banned identity's unused invites."""
        room = Room()
        room.join("bob")
        room.join("carol")
        room.refused(self, author.invite(identity("bob"), room.state, identity("dave").public,
                                         "dave", NOW), "needs an op")
        room.add(author.role(identity("alice"), room.state, room.fp("bob"), "op", NOW))
        room.refused(self, author.kick(identity("bob"), room.state, room.fp("alice"), "", NOW),
                     "same or a higher rank")
        room.invite("bob", "dave")
        room.add(author.kick(identity("bob"), room.state, room.fp("dave"), "", NOW, ban=True))
        self.assertEqual(room.state.invites, {})
        room.refused(self, author.join(identity("dave"), room.state, "dave", NOW), "banned")
        room.add(author.kick(identity("bob"), room.state, room.fp("carol"), "", NOW))
        self.assertNotIn(room.fp("carol"), room.state.members)

    def test_owner_leaving_passes_ownership_to_the_first_op(self):
        """When the owner parts, the first op (else the first member) owns the room:
        every reader derives the same owner, and nobody had to sign it."""
        room = Room()
        for name in ("bob", "carol", "dave"):
            room.join(name)
        room.add(author.role(identity("alice"), room.state, room.fp("dave"), "op", NOW))
        room.add(author.part(identity("alice"), room.state, "", NOW))
        self.assertEqual(room.state.role(room.fp("dave")), "owner")
        room.add(author.part(identity("dave"), room.state, "", NOW))
        self.assertEqual(room.state.role(room.fp("bob")), "owner")

    def test_policy_is_the_owners(self):
        """Only the owner changes the policy; the log says what it is."""
        room = Room()
        room.join("bob")
        room.refused(self, author.policy(identity("bob"), room.state, NOW, invite_only=True),
                     "only the owner")
        room.add(author.policy(identity("alice"), room.state, NOW, invite_only=True))
        self.assertTrue(room.state.invite_only)

    def test_entry_out_of_place_is_a_fork(self):
        """An entry that does not extend the log (another at the same index) is refused."""
        room = Room()
        other = Room(history="shared")
        other.join("carol")
        room.refused(self, other.entries[1], "does not follow")


class EpochTests(SynchronousTestCase):
    def test_recipients_are_members_and_the_author(self):
        """An epoch for someone who is not a member, or not for its author, is refused."""
        room = Room()
        room.join("bob")
        _, signed, _ = author.epoch(identity("alice"), room.state,
                                    [identity("alice").public, identity("mallory").public],
                                    "x", NOW)
        room.refused(self, signed, "not a member")
        _, signed, _ = author.epoch(identity("alice"), room.state, [identity("bob").public],
                                    "x", NOW)
        room.refused(self, signed, "not to its author")
        room.epoch("alice", ["alice", "bob"])
        self.assertEqual(room.state.epoch, 1)

    def test_removed_member_holds_a_key_nobody_may_use(self):
        """After a kick, the current key has a holder who is not a member: stale
        until a new epoch without them."""
        room = Room()
        room.join("bob")
        room.epoch("alice", ["alice", "bob"])
        room.add(author.kick(identity("alice"), room.state, room.fp("bob"), "", NOW))
        self.assertEqual(room.state.stale_holders(), {room.fp("bob")})
        room.epoch("alice", ["alice"])
        self.assertEqual(room.state.stale_holders(), set())

    def test_who_held_long_past_epochs_is_forgotten_but_ones_own(self):
        """Holders of epochs more than HOLDERS_KEPT_EPOCHS back are forgotten,
        but for the fingerprints kept; the current epoch's are whole."""
        room = Room()
        room.join("bob")
        for _ in range(HOLDERS_KEPT_EPOCHS + 3):
            room.epoch("alice", ["alice", "bob"])
        room.state.forget_holders(frozenset({room.fp("bob")}))
        self.assertEqual(room.state.holders[1], {room.fp("bob")})
        self.assertEqual(room.state.holders[room.state.epoch], {room.fp("alice"), room.fp("bob")})
        room.state.forget_holders()
        self.assertNotIn(1, room.state.holders)
        self.assertIn(room.state.epoch - HOLDERS_KEPT_EPOCHS, room.state.holders)

    def test_removals_after_an_entry(self):
        """The removals after an entry are those with a later index, in order."""
        room = Room()
        for name in ("bob", "carol", "dave"):
            room.join(name)
        mark = room.state.length
        room.add(author.part(identity("bob"), room.state, "", NOW))
        room.add(author.part(identity("carol"), room.state, "", NOW))
        self.assertEqual(room.state.removed_after(mark - 1),
                         [(mark, room.fp("bob")), (mark + 1, room.fp("carol"))])
        self.assertEqual(room.state.removed_after(mark), [(mark + 1, room.fp("carol"))])

    def test_epoch_by_a_member_who_left_stays_valid(self):
        """An epoch made by a member is valid for good, after they leave too (class A)."""
        room = Room()
        room.join("eva")
        room.epoch("eva", ["alice", "eva"])
        room.add(author.part(identity("eva"), room.state, "", NOW))
        replayed = replay(room.entries, state=RoomState(room=ROOM))
        self.assertEqual(replayed.epochs[1].author, room.fp("eva"))

    def test_shared_room_chains_keys_and_restarts_only_without_holders(self):
        """In a shared room each epoch must carry the key before it; a member who lacks
        that key cannot cut the history while a member holds it (class F)."""
        room = Room(history="shared")
        room.join("bob")
        first = room.epoch("alice", ["alice"])
        _, unchained, _ = author.epoch(identity("bob"), room.state,
                                       [identity("alice").public, identity("bob").public],
                                       "x", NOW)
        room.refused(self, unchained, "no member holds the previous key")
        _, borrowed, _ = author.epoch(identity("bob"), room.state,
                                      [identity("alice").public, identity("bob").public],
                                      "x", NOW, first)
        room.refused(self, borrowed, "its author was never given")
        room.epoch("alice", ["alice", "bob"], previous_key=first)
        self.assertTrue(room.state.epochs[2].prev_box)

    def test_the_only_holder_who_lost_the_key_may_restart(self):
        """A member who alone holds a shared room's key and lost it (a state from a
        backup) may restart shared history; nobody else's key is cut off."""
        room = Room(history="shared")
        room.join("bob")
        room.epoch("alice", ["alice"])
        _, restart, _ = author.epoch(identity("alice"), room.state,
                                     [identity("alice").public, identity("bob").public], "x", NOW)
        room.add(restart)
        self.assertTrue(room.state.epochs[2].restart)

    def test_a_new_key_starts_as_a_plain_member(self):
        """A rekey (an operator reset, or anyone claiming the nick) gives the new key
        no role: the owner's nick with a new key owns nothing, its invites are void,
        and ownership passes on as if the owner had left."""
        room = Room()
        room.join("bob")
        room.role("alice", "bob", "op")
        room.invite("alice", "carol")
        room.add(author.rekey(identity("mallory"), room.state, identity("alice").fingerprint,
                              "alice", NOW))
        self.assertEqual(room.state.role(identity("mallory").fingerprint), "member")
        self.assertEqual(room.state.role(identity("bob").fingerprint), "owner")
        self.assertEqual(room.state.invites, {})

    def test_key_from_before_sharing_is_never_handed_on(self):
        """Switching a room to shared history is a boundary: the key from before it
        cannot be handed to a newcomer, nor chained into a later epoch (class C)."""
        room = Room()
        room.join("bob")
        old = room.epoch("alice", ["alice", "bob"])
        room.add(author.policy(identity("alice"), room.state, NOW, history="shared"))
        room.join("carol")
        room.refused(self, author.share(identity("alice"), room.state, room.fp("carol"), NOW),
                     "cannot be handed on")
        key, signed, _ = author.epoch(identity("alice"), room.state,
                                      [identity(n).public for n in ("alice", "bob", "carol")],
                                      "x", NOW, previous_key=old)
        self.assertEqual(signed.entry.body["prev_box"], b64(b""))
        room.add(signed)
        room.join("dave")
        room.add(author.share(identity("bob"), room.state, room.fp("dave"), NOW))
        self.assertTrue(room.state.holds(room.fp("dave"), 2))

    def test_rekey_replaces_a_key_which_then_holds_nothing(self):
        """An operator reset's new key takes the member's place and role; the old key
        is a stale holder until the next epoch."""
        room = Room()
        room.join("erin")
        room.epoch("alice", ["alice", "erin"])
        room.add(author.rekey(identity("erin-new"), room.state, room.fp("erin"), "erin", NOW))
        self.assertEqual(room.state.members[room.fp("erin-new")].nick, "erin")
        self.assertEqual(room.state.stale_holders(), {room.fp("erin")})
        room.refused(self, author.rekey(identity("mallory"), room.state, room.fp("alice"),
                                        "erin", NOW), "not erin's")


class SizeTests(SynchronousTestCase):
    def test_epoch_for_the_most_members_fits_a_line(self):
        """An epoch entry for MAX_ROOM_MEMBERS recipients, with the longest room name,
        the largest numbers and the longest reason, is within MAX_ENTRY_BYTES."""
        body = dict(epoch=2**63 - 1, key_id=b64(b"k" * 16),
                    recipients=sorted(b64(bytes([n % 256, n // 256]) * 16)
                                      for n in range(MAX_ROOM_MEMBERS)),
                    prev_box=b64(b"p" * 105), restart=False, reason="\u00e9" * 200)
        entry = make(identity("alice"), "#" + "r" * 32, 2**63 - 1, b"\xff" * 32, "epoch",
                     2**63 - 1, **body).entry
        self.assertLessEqual(len(entry.encode()), MAX_ENTRY_BYTES)


class UpgradeTests(SynchronousTestCase):
    def test_admits_follow_the_upgrade_only(self):
        """An upgraded room's author admits the members it had, right after the genesis,
        and nobody else ever admits anyone."""
        room = Room()
        room.refused(self, author.admit(identity("alice"), room.state, "bob",
                                        identity("bob").public, "member", NOW), "upgrade")
        upgraded = RoomState(room=ROOM)
        upgraded.apply(author.genesis(identity("alice"), ROOM, "alice", NOW, role="op",
                                      legacy_epoch=7, upgrade=True))
        upgraded.apply(author.admit(identity("alice"), upgraded, "bob", identity("bob").public,
                                    "owner", NOW))
        self.assertEqual(upgraded.role(identity("bob").fingerprint), "owner")
        upgraded.apply(author.join(identity("carol"), upgraded, "carol", NOW))
        with self.assertRaises(LogError):
            upgraded.apply(author.admit(identity("alice"), upgraded, "dave",
                                        identity("dave").public, "member", NOW))
        key, signed, _ = author.epoch(identity("bob"), upgraded, [identity("bob").public],
                                      "x", NOW)
        self.assertEqual(signed.entry.body["epoch"], 8)


class UpgradeOwnerTests(SynchronousTestCase):
    def test_an_ops_upgrade_keeps_one_owner(self):
        """An op who moves a room to a log is not made owner while its members are
        admitted: the owner admitted after it stays the one owner."""
        state = RoomState(room=ROOM)
        genesis = author.genesis(identity("bob"), ROOM, "bob", NOW, role="op", legacy_epoch=3,
                                 upgrade=True)
        state.apply(genesis)
        state.apply(author.admit(identity("bob"), state, "alice", identity("alice").public,
                                 "owner", NOW))
        state.apply(author.part(identity("alice"), state, "", NOW))
        self.assertEqual(state.role(identity("bob").fingerprint), "owner")
        state = RoomState(room=ROOM)
        state.apply(genesis)
        state.apply(author.admit(identity("bob"), state, "alice", identity("alice").public,
                                 "owner", NOW))
        self.assertEqual({m.nick: m.role for m in state.members.values()},
                         {"alice": "owner", "bob": "op"})


class PersistenceTests(SynchronousTestCase):
    def test_state_round_trips_through_json(self):
        """What a client saves is what it had: the same state, identities shared."""
        room = Room(history="shared")
        room.join("bob")
        room.invite("alice", "carol")
        room.epoch("alice", ["alice", "bob"])
        identities = {}
        saved = room.state.to_dict(identities)
        loaded = RoomState.from_dict(saved, identities)
        self.assertEqual(loaded.to_dict({}), saved)
        loaded.apply(author.join(identity("dave"), loaded, "dave", NOW))
        self.assertEqual(loaded.length, room.state.length + 1)

    def test_room_code_is_the_same_for_the_same_log(self):
        """The room code follows from the log's head: equal logs, equal codes."""
        first, second = Room(), Room()
        self.assertEqual(replay(first.entries, state=RoomState(room=ROOM)).room_code(),
                         first.state.room_code())
        second.join("bob")
        self.assertNotEqual(first.state.room_code(), second.state.room_code())
        self.assertRegex(first.state.room_code(), r"^\d{5} \d{5} \d{5} \d{5}$")


class MalformedTests(SynchronousTestCase):
    def test_unknown_fields_and_kinds_are_refused(self):
        """An entry with fields its kind does not have is refused, not half-read."""
        room = Room()
        signed = make(identity("alice"), ROOM, 1, room.state.head, "part", NOW, reason="",
                      extra=1)
        room.refused(self, signed, "fields other than")

    @settings(max_examples=300, deadline=None)
    @given(kind=st.sampled_from(sorted(FIELDS)), data=st.data())
    def test_any_values_are_refused_not_a_crash(self, kind, data):
        """An entry with the right fields but values of any JSON type (a member
        signing nonsense) is taken or refused with LogError, never a crash."""
        room = Room()
        room.join("bob")
        room.add(author.epoch(identity("alice"), room.state,
                              [identity("alice").public, identity("bob").public], "r", NOW)[1])
        body = {name: data.draw(_JSON | st.sampled_from(_PLAUSIBLE)) for name in FIELDS[kind]}
        signer = identity(data.draw(st.sampled_from(["alice", "bob"])))
        state = RoomState(room=ROOM) if kind == "genesis" else room.state
        signed = make(signer, ROOM, state.length, state.head, kind, NOW, **body)
        try:
            state.copy().apply(signed)
        except LogError:
            pass
