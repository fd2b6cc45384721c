"""Tests for securechat.server.service, driven through the protocol with
scripted clients over StringTransport and a task.Clock."""

import os

from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionDone
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import ROTATE_AFTER_MESSAGES, ROTATE_AFTER_SECONDS
from securechat.crypto.envelope import MessageHeader, seal
from securechat.crypto.roomkeys import EpochRecord, new_epoch, new_room_key, wrap_key
from securechat.server import service as service_module
from securechat.server.rooms import RoomLimits
from securechat.server.service import ChatService, ServiceSettings
from securechat.server.store import MessageRow
from securechat.crypto.identity import invite_signature, verify_invite
from securechat.wire import b64encode, encode_frame
from tests.identities import identity
from tests.serverharness import Server, decode, verbs_of


class Keys:
    """What a client would compute: epochs, wraps and sealed messages."""

    def __init__(self):
        self.records = {}
        self.keys = {}
        self.seq = {}

    def rotate(self, client, rotator, room, epoch, members, history="joined", wrap_all=True):
        previous = self.records.get((room, epoch - 1))
        key, record, signature, wraps = new_epoch(
            identity(rotator), room, epoch, previous, self.keys.get((room, epoch - 1)),
            [identity(m).public for m in members], "test", history, 1000,
        )
        self.records[(room, epoch)], self.keys[(room, epoch)] = record, key
        frames = client.request("ROTATE", room, str(epoch), b64encode(record.encode()),
                                b64encode(signature), b64encode(wraps[identity(rotator).fingerprint]))
        if wrap_all:
            for member in members:
                if member != rotator:
                    frames += client.request("WRAP", room, str(epoch), member,
                                             b64encode(wraps[identity(member).fingerprint]))
        return frames, wraps

    def message(self, client, sender, room, epoch, text="hi", seq=None, message_id=None):
        if seq is None:
            seq = self.seq[(sender, room)] = self.seq.get((sender, room), 0) + 1
        message_id = message_id or os.urandom(16)
        token, signature = seal(self.keys[(room, epoch)], identity(sender),
                                MessageHeader(room, epoch, seq, message_id), text, 1)
        return client.request("MSG", room, str(epoch), str(seq), b64encode(message_id),
                              b64encode(token), b64encode(signature))


def error_code(frames):
    [error] = [f for f in frames if f.verb == "ERROR"]
    return error.args[0]


class RoomTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.alice = self.server.user("alice")
        self.bob = self.server.user("bob")

    def test_join_creates_room_with_owner(self):
        """Joining a new room creates it, open, with the joiner as owner."""
        room, ok = self.alice.request("JOIN", "#lab")
        state = decode(room)
        self.assertEqual((state["room"], state["role"], state["epoch"], ok.verb),
                         ("#lab", "owner", 0, "OK"))

    def test_second_joiner_is_member_and_announced(self):
        """A second joiner is a member, and members already inside see JOINED."""
        self.alice.request("JOIN", "#lab")
        frames = self.bob.request("JOIN", "#Lab")
        self.assertEqual(decode([f for f in frames if f.verb == "ROOM"][0])["role"], "member")
        [joined] = self.alice.frames()
        self.assertEqual((joined.verb, joined.args[:2]), ("JOINED", ("#lab", "bob")))

    def test_rejoin_is_harmless(self):
        """Joining a room you are in just returns its state."""
        self.alice.request("JOIN", "#lab")
        self.assertEqual(verbs_of(self.alice.request("JOIN", "#lab")), ["ROOM", "OK"])

    def test_bad_room_name(self):
        """Room names without '#' or with odd characters are BAD_NAME."""
        self.assertEqual(error_code(self.alice.request("JOIN", "lab")), "BAD_NAME")
        self.assertEqual(error_code(self.alice.request("JOIN", "#a/b")), "BAD_NAME")

    def test_topic_needs_op(self):
        """Members cannot set the topic; the owner can, and members see TOPIC."""
        self.alice.request("JOIN", "#lab")
        self.bob.request("JOIN", "#lab")
        self.alice.frames()
        self.assertEqual(error_code(self.bob.request("TOPIC", "#lab", "mine")), "NOT_ALLOWED")
        self.alice.request("TOPIC", "#lab", "release friday")
        [topic] = self.bob.frames()
        self.assertEqual(decode(topic)["topic"], "release friday")

    def test_kick_and_ban(self):
        """A kicked member leaves and may rejoin; a banned one may not until unbanned."""
        self.alice.request("JOIN", "#lab")
        self.bob.request("JOIN", "#lab")
        self.alice.request("KICK", "#lab", "bob", "out")
        [parted] = self.bob.frames()
        self.assertEqual(decode(parted)["how"], "kick")
        self.assertEqual(error_code(self.bob.request("KICK", "#lab", "alice")), "NOT_MEMBER")
        self.bob.request("JOIN", "#lab")
        self.alice.request("BAN", "#lab", "bob")
        self.assertEqual(error_code(self.bob.request("JOIN", "#lab")), "BANNED")
        self.alice.request("UNBAN", "#lab", "bob")
        self.assertEqual(verbs_of(self.bob.request("JOIN", "#lab"))[-1], "OK")

    def test_members_cannot_kick(self):
        """A member cannot kick the owner, and an op cannot kick the owner either."""
        self.alice.request("JOIN", "#lab")
        self.bob.request("JOIN", "#lab")
        self.assertEqual(error_code(self.bob.request("KICK", "#lab", "alice")), "NOT_ALLOWED")
        self.alice.request("ROLE", "#lab", "bob", "op")
        self.assertEqual(error_code(self.bob.request("KICK", "#lab", "alice")), "NOT_ALLOWED")

    def test_owner_leaving_promotes_successor(self):
        """When the owner parts, an op (else a member) becomes owner."""
        self.alice.request("JOIN", "#lab")
        self.bob.request("JOIN", "#lab")
        self.alice.request("PART", "#lab")
        self.assertIn("ROLE", verbs_of(self.bob.frames()))
        self.assertEqual(verbs_of(self.bob.request("TOPIC", "#lab", "mine now")), ["TOPIC", "OK"])

    def test_invite_only_with_signed_invites(self):
        """An invite-only room needs an invite signed by an op's identity key."""
        carol = self.server.user("carol")
        self.alice.request("JOIN", "#ops")
        self.alice.request("SET", "#ops", "invite_only", "on")
        self.assertEqual(error_code(self.bob.request("JOIN", "#ops")), "INVITE_ONLY")
        forged = invite_signature(identity("carol"), "#ops", "bob", identity("bob").public)
        self.assertEqual(error_code(self.alice.request("INVITE", "#ops", "bob", b64encode(forged))),
                         "BAD_SIGNATURE")
        signature = invite_signature(identity("alice"), "#ops", "bob", identity("bob").public)
        self.alice.request("INVITE", "#ops", "bob", b64encode(signature))
        self.assertEqual(verbs_of(self.bob.frames()), ["INVITED"])
        self.assertEqual(verbs_of(self.bob.request("JOIN", "#ops"))[-1], "OK")
        self.assertEqual(error_code(carol.request("JOIN", "#ops")), "INVITE_ONLY")
        members = {decode(f)["nick"]: decode(f) for f in self.alice.request("WHO", "#ops")[:-1]}
        self.assertEqual(members["bob"]["inviter"], "alice")
        self.assertTrue(verify_invite(identity("alice").public, members["bob"]["invite_signature"],
                                      "#ops", "bob", identity("bob").public))

    def test_password_room(self):
        """A room password is required to join, and only a hash of it is stored."""
        self.alice.request("JOIN", "#pw")
        self.alice.request("SET", "#pw", "password", "s3cret")
        self.assertEqual(error_code(self.bob.request("JOIN", "#pw")), "BAD_PASSWORD")
        self.assertEqual(error_code(self.bob.request("JOIN", "#pw", "wrong")), "BAD_PASSWORD")
        self.assertEqual(verbs_of(self.bob.request("JOIN", "#pw", "s3cret"))[-1], "OK")
        stored = self.server.service.rooms.find("#pw").password_hash
        self.assertNotIn(b"s3cret", stored)

    def test_list_and_who(self):
        """LIST shows open rooms and your own; WHO lists members with roles and presence."""
        self.alice.request("JOIN", "#open")
        self.alice.request("JOIN", "#secret")
        self.alice.request("SET", "#secret", "invite_only", "on")
        names = [decode(f)["room"] for f in self.bob.request("LIST")[:-1]]
        self.assertEqual(names, ["#open"])
        names = [decode(f)["room"] for f in self.alice.request("LIST")[:-1]]
        self.assertEqual(names, ["#open", "#secret"])
        self.assertEqual(error_code(self.bob.request("WHO", "#secret")), "NOT_MEMBER")
        [member, ok] = self.bob.request("WHO", "#open")
        self.assertEqual((decode(member)["nick"], decode(member)["role"], decode(member)["online"]),
                         ("alice", "owner", 1))

    def test_delete(self):
        """Only the owner deletes a room; members are told and it is gone."""
        self.alice.request("JOIN", "#lab")
        self.bob.request("JOIN", "#lab")
        self.assertEqual(error_code(self.bob.request("DELETE", "#lab")), "NOT_ALLOWED")
        self.alice.request("DELETE", "#lab")
        self.assertEqual(verbs_of(self.bob.frames()), ["DELETED"])
        self.assertEqual(error_code(self.bob.request("WHO", "#lab")), "NO_SUCH_ROOM")

    def test_room_limits(self):
        """Rooms per user and members per room are enforced."""
        server = Server(limits=RoomLimits(max_rooms_per_user=1, max_members_per_room=2))
        a, b, c = server.user("alice"), server.user("bob"), server.user("carol")
        a.request("JOIN", "#one")
        self.assertEqual(error_code(a.request("JOIN", "#two")), "TOO_MANY_ROOMS")
        b.request("JOIN", "#one")
        self.assertEqual(error_code(c.request("JOIN", "#one")), "ROOM_FULL")

    def test_not_logged_in(self):
        """Room commands before login are AUTH_REQUIRED."""
        anonymous = self.server.connect()
        self.assertEqual(error_code(anonymous.request("JOIN", "#lab")), "AUTH_REQUIRED")


class MessageTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.keys = Keys()
        self.alice = self.server.user("alice")
        self.bob = self.server.user("bob")
        self.alice.request("JOIN", "#lab")
        self.bob.request("JOIN", "#lab")
        self.alice.frames()

    def rotate(self, epoch=1, members=("alice", "bob")):
        return self.keys.rotate(self.alice, "alice", "#lab", epoch, members)

    def test_first_message_needs_a_key(self):
        """A room without a key refuses messages with REKEY_REQUIRED until one is published."""
        self.keys.keys[("#lab", 1)] = new_room_key()
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 1)),
                         "REKEY_REQUIRED")

    def test_rotation_publishes_record_and_keys(self):
        """A rotation reaches members as EPOCH, then each wrap as KEY."""
        frames, _ = self.rotate()
        self.assertEqual(frames[-1].verb, "OK")
        self.assertEqual(verbs_of(self.bob.frames()), ["EPOCH", "KEY"])

    def test_message_acked_then_fanned_out(self):
        """A message is acknowledged with its server seq and reaches the other member only."""
        self.rotate()
        self.bob.frames()
        [ack] = self.keys.message(self.alice, "alice", "#lab", 1)
        self.assertEqual((ack.verb, ack.args), ("OK", ("1",)))
        [message] = self.bob.frames()
        self.assertEqual((decode(message)["sender"], decode(message)["server_seq"]), ("alice", 1))
        self.assertEqual(self.alice.frames(), [])

    def test_batch_leaves_in_one_write_per_connection(self):
        """Messages committed together reach each member, and their acks the sender, in one write each."""
        self.rotate()
        self.bob.frames()
        lines = []

        class Capture:
            def request(self, verb, *args):
                lines.append(encode_frame(verb, f"m{len(lines)}", *args) + b"\n")
                return []

        for _ in range(3):
            self.keys.message(Capture(), "alice", "#lab", 1)
        writes = {"alice": 0, "bob": 0}
        for name, client in (("alice", self.alice), ("bob", self.bob)):
            write = client.transport.write

            def counted(data, name=name, write=write):
                writes[name] += 1
                write(data)

            client.transport.write = counted
        self.alice.protocol.dataReceived(b"".join(lines))
        self.server.clock.advance(0)
        self.assertEqual(writes, {"alice": 1, "bob": 1})
        self.assertEqual(verbs_of(self.alice.frames()), ["OK"] * 3)
        self.assertEqual([decode(f)["server_seq"] for f in self.bob.frames()], [1, 2, 3])

    def test_retry_is_idempotent(self):
        """Resending a stored message gets DUPLICATE with the original seq, and no second fan-out."""
        self.rotate()
        self.bob.frames()
        message_id = os.urandom(16)
        self.keys.message(self.alice, "alice", "#lab", 1, seq=1, message_id=message_id)
        self.bob.frames()
        [duplicate] = self.keys.message(self.alice, "alice", "#lab", 1, seq=1, message_id=message_id)
        self.assertEqual((duplicate.verb, duplicate.args), ("DUPLICATE", ("1",)))
        self.assertEqual(self.bob.frames(), [])
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 1, seq=1)),
                         "SEQ_REUSED")

    def test_non_member_and_stale_epoch(self):
        """Non-members get NOT_MEMBER; an old epoch gets STALE_EPOCH."""
        self.rotate()
        self.rotate(2)
        carol = self.server.user("carol")
        self.keys.keys[("#lab", 3)] = self.keys.keys[("#lab", 2)]
        self.assertEqual(error_code(self.keys.message(carol, "carol", "#lab", 2)), "NOT_MEMBER")
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 1)), "STALE_EPOCH")
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 3)), "STALE_EPOCH")

    def test_removal_requires_rekey(self):
        """After a kick the old epoch is refused until someone publishes the next one."""
        self.rotate()
        self.alice.request("KICK", "#lab", "bob")
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 1)),
                         "REKEY_REQUIRED")
        self.rotate(2, ("alice",))
        self.assertEqual(self.keys.message(self.alice, "alice", "#lab", 2)[0].verb, "OK")

    def test_joined_policy_newcomer_forces_rekey(self):
        """In a 'joined' room a newcomer forces a new epoch before the next message."""
        self.rotate()
        self.server.user("carol").request("JOIN", "#lab")
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 1)),
                         "REKEY_REQUIRED")

    def test_rotation_after_100_messages_or_7_days(self):
        """An epoch that carried 100 messages, or is 7 days old, must be replaced."""
        self.rotate()
        for _ in range(ROTATE_AFTER_MESSAGES):
            self.assertEqual(self.keys.message(self.alice, "alice", "#lab", 1)[0].verb, "OK")
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 1)),
                         "REKEY_REQUIRED")
        self.rotate(2)
        self.server.clock.advance(ROTATE_AFTER_SECONDS)
        self.assertEqual(error_code(self.keys.message(self.alice, "alice", "#lab", 2)),
                         "REKEY_REQUIRED")

    def test_concurrent_rotation_conflict(self):
        """Two members publishing the same epoch: one wins, the other gets EPOCH_CONFLICT."""
        self.rotate()
        bob_keys = Keys()
        bob_keys.records, bob_keys.keys = dict(self.keys.records), dict(self.keys.keys)
        self.rotate(2)
        frames, _ = bob_keys.rotate(self.bob, "bob", "#lab", 2, ("alice", "bob"))
        self.assertEqual(error_code(frames), "EPOCH_CONFLICT")

    def test_bad_epoch_records(self):
        """A record for another room, an unchained one, or one not signed by the sender is refused."""
        key, record, signature, wraps = new_epoch(identity("alice"), "#other", 1, None, None,
                                                  [identity("alice").public], "x", "joined", 1)
        own = b64encode(wraps[identity("alice").fingerprint])
        frames = self.alice.request("ROTATE", "#lab", "1", b64encode(record.encode()),
                                    b64encode(signature), own)
        self.assertEqual(error_code(frames), "BAD_EPOCH_RECORD")
        key, record, signature, wraps = new_epoch(identity("alice"), "#lab", 1, None, None,
                                                  [identity("alice").public], "x", "joined", 1)
        frames = self.bob.request("ROTATE", "#lab", "1", b64encode(record.encode()),
                                  b64encode(signature), own)
        self.assertEqual(error_code(frames), "BAD_EPOCH_RECORD")
        forged = EpochRecord(**{**record.__dict__, "rotator": identity("bob").fingerprint})
        frames = self.bob.request("ROTATE", "#lab", "1", b64encode(forged.encode()),
                                  b64encode(signature), own)
        self.assertEqual(error_code(frames), "BAD_SIGNATURE")

    def test_history_and_sync(self):
        """History pages by server seq; SYNC returns state, keys and missed messages."""
        self.rotate()
        for n in range(5):
            self.keys.message(self.alice, "alice", "#lab", 1, f"m{n}")
        self.bob.frames()
        page = self.bob.request("HISTORY", "#lab", "before", "4", "2")
        self.assertEqual([decode(f)["server_seq"] for f in page[:-1]], [2, 3])
        synced = self.bob.request("SYNC", "#lab=3")
        self.assertEqual(verbs_of(synced), ["ROOM", "EPOCH", "KEY", "MESSAGE", "MESSAGE", "OK"])
        self.assertEqual(error_code(self.bob.request("SYNC", "lab=x")), "BAD_ARGUMENTS")


class KeyRequestTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.server = Server(path=self.path)
        self.keys = Keys()
        self.alice = self.server.user("alice")
        self.alice.request("JOIN", "#lab")
        self.keys.rotate(self.alice, "alice", "#lab", 1, ("alice",), history="shared")

    def test_request_served_by_online_holder(self):
        """A newcomer's key request goes to an online holder, and the wrap comes back as KEY."""
        carol = self.server.user("carol")
        carol.request("JOIN", "#lab")
        self.alice.frames()
        self.assertEqual(verbs_of(carol.request("KEYREQ", "#lab")), ["PENDING", "OK"])
        [request] = self.alice.frames()
        self.assertEqual((request.verb, decode(request)["nick"]), ("WRAPREQ", "carol"))
        key = self.keys.keys[("#lab", 1)]
        wrapped = wrap_key(key, identity("carol").public, "#lab", 1)
        self.alice.request("WRAP", "#lab", "1", "carol", b64encode(wrapped))
        [delivered] = carol.frames()
        self.assertEqual((delivered.verb, decode(delivered)["wrap"]), ("KEY", wrapped))

    def test_request_waits_for_holder_across_restart(self):
        """With every holder offline the request waits, survives a restart, and reaches
        the first holder to log in."""
        self.alice.protocol.connectionLost(Failure(ConnectionDone()))
        carol = self.server.user("carol")
        carol.request("JOIN", "#lab")
        carol.request("KEYREQ", "#lab")
        self.server.service.store.close()
        restarted = Server(path=self.path)
        alice = restarted.user("alice")
        [request] = alice.frames()
        self.assertEqual((request.verb, decode(request)["nick"]), ("WRAPREQ", "carol"))

    def test_withheld_is_told(self):
        """A holder may withhold the key; the requester is told who and why."""
        carol = self.server.user("carol")
        carol.request("JOIN", "#lab")
        carol.request("KEYREQ", "#lab")
        self.alice.frames()
        self.alice.request("WITHHOLD", "#lab", "1", "carol", "unverified", "verify me first")
        [withheld] = carol.frames()
        self.assertEqual((decode(withheld)["by"], decode(withheld)["code"]), ("alice", "unverified"))
        self.assertEqual(error_code(self.alice.request("WITHHOLD", "#lab", "1", "carol", "x")),
                         "NO_SUCH_REQUEST")

    def test_no_key_yet(self):
        """Asking for the key of a room that has none says so."""
        self.alice.request("JOIN", "#empty")
        self.assertEqual(error_code(self.alice.request("KEYREQ", "#empty")), "NO_EPOCH")



class LoggingTests(SynchronousTestCase):
    def test_logs_hold_no_secrets(self):
        """A conversation logs connections and room changes, but no token, signature or
        wrapped key, in any form."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        server, keys = Server(), Keys()
        alice, bob = server.user("alice"), server.user("bob")
        alice.request("JOIN", "#lab")
        bob.request("JOIN", "#lab")
        _, wraps = keys.rotate(alice, "alice", "#lab", 1, ("alice", "bob"))
        keys.message(alice, "alice", "#lab", 1, "secret words")
        text = "\n".join(formatEvent(e) + repr(e) for e in events)
        stored = server.service.store._runner.connection.execute(
            "SELECT token, signature FROM messages").fetchone()
        secrets = [*stored, *wraps.values(), identity("alice").public.enc_signature]
        for secret in secrets:
            self.assertNotIn(b64encode(secret)[:40], text)
            self.assertNotIn(secret.hex()[:40], text)
        self.assertIn("alice rotated #lab to epoch 1", text)


class PagingTests(SynchronousTestCase):
    """WHO and LIST answer a page at a time, so no request builds an unbounded reply."""

    def setUp(self):
        self.patch(service_module, "WHO_PAGE", 2)
        self.patch(service_module, "LIST_PAGE", 2)
        self.server = Server()
        self.users = [self.server.user(name) for name in ("alice", "bob", "carol", "dave")]
        for client, room in zip(self.users, ("#a", "#b", "#c", "#d")):
            client.request("JOIN", room)
        for client in self.users[1:]:
            client.request("JOIN", "#a")

    def test_who_pages_in_nick_order(self):
        """WHO gives two members and the nick to go on from; after the last page, none."""
        self.users[0].frames()
        first = self.users[0].request("WHO", "#a")
        self.assertEqual([decode(f)["nick"] for f in first[:-1]], ["alice", "bob"])
        self.assertEqual(first[-1].args, ("2", "bob"))
        second = self.users[0].request("WHO", "#a", "bob")
        self.assertEqual([decode(f)["nick"] for f in second[:-1]], ["carol", "dave"])
        self.assertEqual(second[-1].args, ("2",))

    def test_list_pages_in_name_order(self):
        """LIST gives two rooms and the name to go on from."""
        self.users[0].frames()
        first = self.users[0].request("LIST")
        self.assertEqual(first[-1].args, ("2", "#b"))
        rest = self.users[0].request("LIST", "#b")
        self.assertEqual([decode(f)["room"] for f in rest[:-1]], ["#c", "#d"])

    def test_client_reads_every_page(self):
        """The client core asks on until the last page: its member list has everyone."""
        from tests.clientharness import Network
        net = Network()
        rigs = [net.client(name) for name in ("alice", "bob", "carol", "dave", "eve")]
        for rig in rigs:
            rig.session.join("#all")
            net.settle()
        d = rigs[0].session.who("#all")
        net.settle()
        self.assertEqual(len(self.successResultOf(d)), 5)


class ReviewRegressionTests(SynchronousTestCase):
    """Faults a review found, each pinned by a test."""

    def setUp(self):
        self.server = Server()
        self.keys = Keys()
        self.alice, self.bob, self.carol = (self.server.user(n) for n in ("alice", "bob", "carol"))
        for client in (self.alice, self.bob, self.carol):
            client.request("JOIN", "#lab")
        self.keys.rotate(self.alice, "alice", "#lab", 1, ("alice", "bob", "carol"), history="shared")
        self.server.service.rooms.find("#lab").holders.discard(
            self.server.service.accounts.find("carol").id)
        for client in (self.alice, self.bob, self.carol):
            client.frames()

    def test_only_holders_withhold(self):
        """A member who holds no key cannot withhold someone else's key request."""
        dave = self.server.user("dave")
        dave.request("JOIN", "#lab")
        dave.request("KEYREQ", "#lab")
        self.assertEqual(error_code(self.carol.request("WITHHOLD", "#lab", "1", "dave", "x")),
                         "NOT_ALLOWED")

    def test_key_request_refiled_after_junk_wrap(self):
        """A junk wrap does not stop its target from asking again."""
        self.alice.request("WRAP", "#lab", "1", "carol", b64encode(b"\x00" * 384))
        self.carol.frames()
        self.assertEqual(verbs_of(self.carol.request("KEYREQ", "#lab")), ["PENDING", "OK"])

    def test_deleted_room_fails_only_its_messages(self):
        """A room deleted while its message waits in a batch fails that message alone."""
        self.alice.request("JOIN", "#other")
        self.keys.rotate(self.alice, "alice", "#other", 1, ("alice",))
        self.keys.message(self.alice, "alice", "#other", 1, "queue me")
        service = self.server.service
        other, lab = service.rooms.find("#other"), service.rooms.find("#lab")
        alice_id, bob_id = service.accounts.find("alice").id, service.accounts.find("bob").id
        doomed = service.messages.append(MessageRow(other.id, alice_id, 1, 50, b"d" * 16, b"t",
                                                    b"s", 0.0))
        kept = service.messages.append(MessageRow(lab.id, bob_id, 1, 50, b"k" * 16, b"t", b"s",
                                                  0.0))
        service.store.delete_room(other.id)
        self.server.clock.advance(0)
        self.assertEqual(self.successResultOf(doomed).outcome, "gone")
        self.assertEqual(self.successResultOf(kept).outcome, "stored")

    def test_bad_sync_positions(self):
        """Odd digits and huge numbers in SYNC positions are BAD_ARGUMENTS, not a crash."""
        for positions in ["#lab=\u00b2", "#lab=99999999999999999999999"]:
            self.assertEqual(error_code(self.bob.request("SYNC", positions)), "BAD_ARGUMENTS")

    def test_record_with_wrong_types(self):
        """An epoch record with a number where a name belongs is BAD_EPOCH_RECORD."""
        import json

        document = json.loads(self.keys.records[("#lab", 1)].encode())
        document["room"] = 5
        record = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        frames = self.alice.request("ROTATE", "#lab", "2", b64encode(record), b64encode(b"s" * 384),
                                    b64encode(b"w" * 384))
        self.assertEqual(error_code(frames), "BAD_EPOCH_RECORD")

    def test_big_replies_are_paged(self):
        """History never answers with more than the reply budget; the rest is paged."""
        from securechat.constants import REPLY_BUDGET_BYTES

        for n in range(40):
            self.keys.message(self.alice, "alice", "#lab", 1, "x" * 15000)
        self.bob.frames()
        page = self.bob.request("HISTORY", "#lab", "after", "0", "500")
        self.assertLess(sum(len(f.args[6]) for f in page[:-1]) * 3 // 4, REPLY_BUDGET_BYTES)
        self.assertLess(len(page) - 1, 40)
        synced = self.bob.request("SYNC", "#lab=0")
        self.assertIn("MORE", verbs_of(synced))


class ResetTests(SynchronousTestCase):
    """The operator's reset: a user who lost their keys registers the nick anew."""

    def setUp(self):
        self.server = Server()
        self.alice = self.server.user("alice")
        self.alice.request("JOIN", "#lab")
        self.user_id = self.server.service.accounts.find("alice").id

    def reset_token(self, user_id=None) -> str:
        from securechat.server.passwords import new_registration_token, token_digest

        token = new_registration_token()
        self.server.service.store.add_registration_token(
            token_digest(token), 0.0, resets=user_id or self.user_id)
        return token

    def register_new_keys(self, token, name="alice-new"):
        client = self.server.connect()
        public = identity(name).public
        return client, client.without_limits(client.request(
            "REGISTER", "alice", b64encode(public.sign_der), b64encode(public.enc_der),
            b64encode(public.enc_signature), client.login_signature(name, "alice"), token))

    def test_reset_gives_new_keys_and_ends_old_sessions(self):
        """With a reset token the nick registers with new keys; the old session is told
        and closed, the old key no longer logs in, and the user's rooms need a new key."""
        client, frames = self.register_new_keys(self.reset_token())
        self.assertEqual(frames[0].verb, "OK")
        errors = [f for f in self.alice.frames() if f.verb == "ERROR"]
        self.assertEqual(decode(errors[0])["code"], "ACCOUNT_RESET")
        self.assertTrue(self.alice.transport.disconnecting)
        self.assertEqual(decode(self.server.connect().login("alice")[0])["code"], "AUTH_FAILED")
        self.assertEqual(self.server.connect().login("alice-new", "alice")[0].verb, "OK")
        room = self.server.service.rooms.find("#lab")
        self.assertTrue(room.rekey_required)

    def test_token_works_once_and_only_for_its_user(self):
        """A used reset token, or one made for somebody else, is refused."""
        token = self.reset_token()
        self.register_new_keys(token)
        _, frames = self.register_new_keys(token, "alice-third")
        self.assertEqual(decode(frames[0])["code"], "BAD_REGISTRATION_TOKEN")
        self.server.user("bob")
        bobs = self.reset_token(self.server.service.accounts.find("bob").id)
        _, frames = self.register_new_keys(bobs, "alice-third")
        self.assertEqual(decode(frames[0])["code"], "BAD_REGISTRATION_TOKEN")

    def test_existing_nick_without_token_is_taken(self):
        """Without a token, registering a taken nick is still NICK_TAKEN."""
        client = self.server.connect()
        frames = client.register("alice-new", "alice")
        self.assertEqual(decode(frames[0])["code"], "NICK_TAKEN")


class LoadingStore:
    """A store whose load the test fails by hand."""

    def __init__(self):
        self.loading = defer.Deferred()

    def load(self):
        return self.loading

    def close(self):
        return defer.succeed(None)


class LoadFailureTests(SynchronousTestCase):
    def setUp(self):
        self.stops = []
        self.patch(reactor, "stop", lambda: self.stops.append(True))
        self.store = LoadingStore()
        self.service = ChatService(self.store, task.Clock(), ServiceSettings("test.example", "open",
                                                                             RoomLimits()))
        self.service.startService()

    def test_failed_load_stops_the_daemon(self):
        """A database that cannot be loaded is logged and stops the daemon rather than serve empty."""
        self.store.loading.errback(OSError("disk gone"))
        self.assertEqual((self.stops, len(self.flushLoggedErrors(OSError))), ([True], 1))

    def test_load_failing_after_stop_is_no_reason_to_stop(self):
        """A load that fails because the service was stopped under it neither logs nor stops the reactor."""
        self.successResultOf(self.service.stopService())
        self.store.loading.errback(OSError("closed"))
        self.assertEqual((self.stops, self.flushLoggedErrors(OSError)), ([], []))
