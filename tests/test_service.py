"""Tests for securechat.server.service, driven through the protocol with
scripted clients over StringTransport and a task.Clock; the room log entries
are made as honest members make them (tests.logscript)."""

import json
import os

from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionDone
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import ROTATE_AFTER_MESSAGES, ROTATE_AFTER_SECONDS
from securechat.crypto.roomkeys import new_room_key, wrap_key
from securechat.roomlog import author
from securechat.roomlog.entry import LogEntry, SignedEntry
from securechat.server import service as service_module
from securechat.server.rooms import RoomLimits
from securechat.server.service import ChatService, ServiceSettings
from securechat.server.store import MessageRow
from securechat.wire import b64encode, encode_frame
from tests.identities import identity
from tests.logscript import NOW, Members, fingerprint
from tests.serverharness import Server, decode, verbs_of


def error_code(frames):
    [error] = [f for f in frames if f.verb == "ERROR"]
    return error.args[0]


class RoomTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.log = Members()
        self.alice = self.server.user("alice")
        self.bob = self.server.user("bob")

    def join(self, client, name, room="#lab", password=None):
        return self.log.join(client, name, room, password)

    def test_join_creates_room_with_owner(self):
        """A genesis entry creates the room, open, with its author as owner."""
        room, ok = self.join(self.alice, "alice")
        state = decode(room)
        self.assertEqual((state["room"], state["role"], state["epoch"], state["log_length"],
                          ok.verb), ("#lab", "owner", 0, 1, "OK"))

    def test_second_joiner_is_member_and_announced(self):
        """A join entry makes its author a member, and members already inside get it."""
        self.join(self.alice, "alice")
        frames = self.join(self.bob, "bob", "#Lab")
        self.assertEqual(decode([f for f in frames if f.verb == "ROOM"][0])["role"], "member")
        [entry] = self.alice.frames()
        self.assertEqual((entry.verb, decode(entry)["index"]), ("ENTRY", 1))
        self.assertEqual(SignedEntry.decode(decode(entry)["entry"], b"").entry.kind, "join")

    def test_rejoin_is_harmless(self):
        """Joining a room you are in just returns its state."""
        self.join(self.alice, "alice")
        signed = author.join(identity("alice"), self.log.state("#lab"), "alice", NOW)
        frames = self.alice.request("JOIN", "#lab", "1", b64encode(signed.data),
                                    b64encode(signed.signature))
        self.assertEqual(verbs_of(frames), ["ROOM", "OK"])

    def test_bad_room_name(self):
        """Room names without '#' or with odd characters are BAD_NAME."""
        for name in ("lab", "#a/b"):
            genesis = author.genesis(identity("alice"), name, "alice", NOW)
            frames = self.alice.request("JOIN", name, "0", b64encode(genesis.data),
                                        b64encode(genesis.signature))
            self.assertEqual(error_code(frames), "BAD_NAME")

    def test_entry_signed_by_someone_else_is_refused(self):
        """A connection appends only entries its own user signed: bob cannot relay
        alice's, nor claim a nick that is not his."""
        self.join(self.alice, "alice")
        signed = author.join(identity("carol"), self.log.state("#lab"), "carol", NOW)
        frames = self.bob.request("JOIN", "#lab", "1", b64encode(signed.data),
                                  b64encode(signed.signature))
        self.assertEqual(error_code(frames), "BAD_ENTRY")
        signed = author.join(identity("bob"), self.log.state("#lab"), "robert", NOW)
        frames = self.bob.request("JOIN", "#lab", "1", b64encode(signed.data),
                                  b64encode(signed.signature))
        self.assertEqual(error_code(frames), "BAD_ENTRY")

    def test_entry_breaking_the_rules_is_refused(self):
        """An entry the log's rules refuse (a forged signature, a wrong position) is not stored."""
        self.join(self.alice, "alice")
        signed = author.join(identity("bob"), self.log.state("#lab"), "bob", NOW)
        frames = self.bob.request("JOIN", "#lab", "1", b64encode(signed.data),
                                  b64encode(b"\x01" * 384))
        self.assertEqual(error_code(frames), "BAD_ENTRY")
        frames = self.bob.request("JOIN", "#lab", "5", b64encode(signed.data),
                                  b64encode(signed.signature))
        self.assertEqual(error_code(frames), "LOG_CONFLICT")
        self.assertEqual(self.server.service.rooms.find("#lab").state.length, 1)

    def test_concurrent_appends_one_wins(self):
        """Two entries for the same place: the first is stored, the second is LOG_CONFLICT."""
        self.join(self.alice, "alice")
        state = self.log.state("#lab").copy()
        self.join(self.bob, "bob")
        carol = self.server.user("carol")
        late = author.join(identity("carol"), state, "carol", NOW)
        frames = carol.request("JOIN", "#lab", "1", b64encode(late.data), b64encode(late.signature))
        self.assertEqual(error_code(frames), "LOG_CONFLICT")

    def test_log_is_read_a_page_at_a_time(self):
        """LOG returns the entries from an index, and says how long the log is."""
        self.join(self.alice, "alice")
        self.join(self.bob, "bob")
        frames = self.bob.request("LOG", "#lab", "1")
        self.assertEqual([decode(f)["index"] for f in frames[:-1]], [1])
        self.assertEqual(frames[-1].args, ("1", "2"))

    def test_topic_needs_op(self):
        """Members cannot set the topic; the owner can, and members see TOPIC."""
        self.join(self.alice, "alice")
        self.join(self.bob, "bob")
        self.alice.frames()
        self.assertEqual(error_code(self.bob.request("TOPIC", "#lab", "mine")), "NOT_ALLOWED")
        self.alice.request("TOPIC", "#lab", "release friday")
        [topic] = self.bob.frames()
        self.assertEqual(decode(topic)["topic"], "release friday")

    def test_kick_and_ban(self):
        """A kicked member leaves and may rejoin; a banned one may not until unbanned."""
        self.join(self.alice, "alice")
        self.join(self.bob, "bob")
        self.log.kick(self.alice, "alice", "#lab", "bob")
        self.assertIn("ENTRY", verbs_of(self.bob.frames()))
        self.assertNotIn(self.server.service.accounts.find("bob").id,
                         self.server.service.rooms.find("#lab").members)
        self.assertEqual(error_code(self.log.part(self.bob, "bob", "#lab")), "NOT_MEMBER")
        self.join(self.bob, "bob")
        self.log.kick(self.alice, "alice", "#lab", "bob", ban=True)
        self.assertEqual(error_code(self.join(self.bob, "bob")), "BANNED")
        self.log.unban(self.alice, "alice", "#lab", "bob")
        self.assertEqual(verbs_of(self.join(self.bob, "bob"))[-1], "OK")

    def test_members_cannot_kick(self):
        """A member cannot kick the owner, and an op cannot kick the owner either."""
        self.join(self.alice, "alice")
        self.join(self.bob, "bob")
        kick = author.kick(identity("bob"), self.log.state("#lab"), fingerprint("alice"), "",
                           NOW)
        frames = self.bob.request("APPEND", "#lab", "2", b64encode(kick.data),
                                  b64encode(kick.signature))
        self.assertEqual(error_code(frames), "BAD_ENTRY")
        self.log.role(self.alice, "alice", "#lab", "bob", "op")
        self.assertEqual(error_code(self.log.kick(self.bob, "bob", "#lab", "alice")),
                         "BAD_ENTRY")

    def test_owner_leaving_promotes_successor(self):
        """When the owner parts, an op (else a member) becomes owner, by the log."""
        self.join(self.alice, "alice")
        self.join(self.bob, "bob")
        self.log.part(self.alice, "alice", "#lab")
        room = self.server.service.rooms.find("#lab")
        self.assertEqual(room.state.role(fingerprint("bob")), "owner")
        self.assertEqual(verbs_of(self.bob.request("TOPIC", "#lab", "mine now"))[-2:],
                         ["TOPIC", "OK"])

    def test_invite_only_with_signed_invites(self):
        """An invite-only room needs an invite entry made by an op, for that identity."""
        carol = self.server.user("carol")
        self.join(self.alice, "alice", "#ops")
        self.log.policy(self.alice, "alice", "#ops", invite_only=True)
        self.assertEqual(error_code(self.join(self.bob, "bob", "#ops")), "INVITE_ONLY")
        self.assertEqual(error_code(self.bob.request("LOG", "#ops", "0")), "NOT_MEMBER")
        self.log.invite(self.alice, "alice", "#ops", "bob")
        self.assertEqual(verbs_of(self.bob.frames()), ["INVITED"])
        self.assertEqual(verbs_of(self.bob.request("LOG", "#ops", "0"))[-1], "OK")
        self.assertEqual(verbs_of(self.join(self.bob, "bob", "#ops"))[-1], "OK")
        self.assertEqual(error_code(self.join(carol, "carol", "#ops")), "INVITE_ONLY")

    def test_invite_of_an_unknown_key_is_refused(self):
        """An invite naming a key no user has, or a nick with another key, is refused."""
        self.join(self.alice, "alice")
        frames = self.log.append(self.alice, "alice", "#lab", lambda me, s: author.invite(
            me, s, identity("mallory").public, "bob", NOW))
        self.assertEqual(error_code(frames), "NO_SUCH_USER")

    def test_password_room(self):
        """A room password is required to join, and only a hash of it is stored."""
        self.join(self.alice, "alice", "#pw")
        self.alice.request("SET", "#pw", "password", "s3cret")
        self.assertEqual(error_code(self.join(self.bob, "bob", "#pw")), "BAD_PASSWORD")
        self.assertEqual(error_code(self.join(self.bob, "bob", "#pw", "wrong")), "BAD_PASSWORD")
        self.assertEqual(verbs_of(self.join(self.bob, "bob", "#pw", "s3cret"))[-1], "OK")
        stored = self.server.service.rooms.find("#pw").password_hash
        self.assertNotIn(b"s3cret", stored)

    def test_list_and_who(self):
        """LIST shows open rooms and your own; WHO lists members with roles and presence."""
        self.join(self.alice, "alice", "#open")
        self.join(self.alice, "alice", "#secret")
        self.log.policy(self.alice, "alice", "#secret", invite_only=True)
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
        self.join(self.alice, "alice")
        self.join(self.bob, "bob")
        self.assertEqual(error_code(self.bob.request("DELETE", "#lab")), "NOT_ALLOWED")
        self.alice.request("DELETE", "#lab")
        self.assertEqual(verbs_of(self.bob.frames())[-1], "DELETED")
        self.assertEqual(error_code(self.bob.request("WHO", "#lab")), "NO_SUCH_ROOM")

    def test_room_limits(self):
        """Rooms per user and members per room are enforced."""
        server = Server(limits=RoomLimits(max_rooms_per_user=1, max_members_per_room=2))
        log = Members()
        a, b, c = server.user("alice"), server.user("bob"), server.user("carol")
        log.join(a, "alice", "#one")
        self.assertEqual(error_code(log.join(a, "alice", "#two")), "TOO_MANY_ROOMS")
        log.join(b, "bob", "#one")
        self.assertEqual(error_code(log.join(c, "carol", "#one")), "ROOM_FULL")

    def test_not_logged_in(self):
        """Room commands before login are AUTH_REQUIRED."""
        anonymous = self.server.connect()
        self.assertEqual(error_code(anonymous.request("LOG", "#lab", "0")), "AUTH_REQUIRED")


class MessageTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.log = Members()
        self.alice = self.server.user("alice")
        self.bob = self.server.user("bob")
        self.log.join(self.alice, "alice", "#lab")
        self.log.join(self.bob, "bob", "#lab")
        self.alice.frames()

    def rotate(self, members=None, client=None, name="alice"):
        return self.log.rotate(client or self.alice, name, "#lab", members)

    def say(self, epoch=None, client=None, name="alice", **kwargs):
        return self.log.message(client or self.alice, name, "#lab", epoch, **kwargs)

    def test_first_message_needs_a_key(self):
        """A room without a key refuses messages until its first epoch is appended."""
        self.log.keys[("#lab", 0)] = new_room_key()
        self.assertEqual(error_code(self.say(0)), "REKEY_REQUIRED")

    def test_rotation_publishes_entry_and_keys(self):
        """A rotation reaches members as its ENTRY, then each wrap as KEY."""
        frames, _ = self.rotate()
        self.assertEqual(frames[-1].verb, "OK")
        self.assertEqual(verbs_of(self.bob.frames()), ["ENTRY", "KEY"])

    def test_rotation_needs_its_wraps_first(self):
        """An epoch whose wraps were not all handed over first is refused whole."""
        state = self.log.state("#lab")
        _, signed, wraps = author.epoch(identity("alice"), state,
                                        [identity("alice").public, identity("bob").public],
                                        "x", NOW)
        frames = self.alice.request("ROTATE", "#lab", str(signed.entry.index),
                                    b64encode(signed.data), b64encode(signed.signature),
                                    b64encode(wraps[fingerprint("alice")]))
        self.assertEqual(error_code(frames), "WRAPS_MISSING")
        self.assertEqual(self.server.service.rooms.find("#lab").epoch, 0)

    def test_epoch_for_a_non_member_is_refused(self):
        """An epoch naming someone who is not a member is refused (BAD_ENTRY)."""
        self.server.user("carol")
        frames, _ = self.rotate(("alice", "bob", "carol"))
        self.assertEqual(error_code(frames), "BAD_ENTRY")

    def test_message_acked_then_fanned_out(self):
        """A message is acknowledged with its server seq and reaches the other member only."""
        self.rotate()
        self.bob.frames()
        [ack] = self.say()
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
            self.say(client=Capture())
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
        self.say(seq=1, message_id=message_id)
        self.bob.frames()
        [duplicate] = self.say(seq=1, message_id=message_id)
        self.assertEqual((duplicate.verb, duplicate.args), ("DUPLICATE", ("1",)))
        self.assertEqual(self.bob.frames(), [])
        self.assertEqual(error_code(self.say(seq=1)), "SEQ_REUSED")

    def test_next_seq_survives_a_part_and_a_rejoin(self):
        """The server tells a rejoining member the seq to go on from."""
        self.rotate()
        for _ in range(3):
            self.say(client=self.bob, name="bob")
        self.log.part(self.bob, "bob", "#lab")
        [room] = [f for f in self.log.join(self.bob, "bob", "#lab") if f.verb == "ROOM"]
        self.assertEqual(decode(room)["next_seq"], 4)

    def test_non_member_and_stale_epoch(self):
        """Non-members get NOT_MEMBER; an old epoch gets STALE_EPOCH."""
        self.rotate()
        self.rotate()
        carol = self.server.user("carol")
        self.log.keys[("#lab", 3)] = self.log.keys[("#lab", 2)]
        self.assertEqual(error_code(self.say(2, carol, "carol")), "NOT_MEMBER")
        self.assertEqual(error_code(self.say(1)), "STALE_EPOCH")
        self.assertEqual(error_code(self.say(3)), "STALE_EPOCH")

    def test_removal_requires_rekey(self):
        """After a kick the old epoch is refused until someone appends the next one."""
        self.rotate()
        self.log.kick(self.alice, "alice", "#lab", "bob")
        self.assertEqual(error_code(self.say(1)), "REKEY_REQUIRED")
        self.rotate(("alice",))
        self.assertEqual(self.say(2)[0].verb, "OK")

    def test_joined_policy_newcomer_forces_rekey(self):
        """In a 'joined' room a newcomer forces a new epoch before the next message."""
        self.rotate()
        self.log.join(self.server.user("carol"), "carol", "#lab")
        self.assertEqual(error_code(self.say(1)), "REKEY_REQUIRED")

    def test_rotation_after_100_messages_or_7_days(self):
        """An epoch that carried 100 messages, or is 7 days old, must be replaced."""
        self.rotate()
        for _ in range(ROTATE_AFTER_MESSAGES):
            self.assertEqual(self.say(1)[0].verb, "OK")
        self.assertEqual(error_code(self.say(1)), "REKEY_REQUIRED")
        self.rotate()
        self.server.clock.advance(ROTATE_AFTER_SECONDS)
        self.assertEqual(error_code(self.say(2)), "REKEY_REQUIRED")

    def test_concurrent_rotation_conflict(self):
        """Two members appending the same epoch: one wins, the other gets LOG_CONFLICT."""
        self.rotate()
        behind = Members()
        behind.states = {k: v.copy() for k, v in self.log.states.items()}
        behind.keys = dict(self.log.keys)
        self.rotate()
        frames, _ = behind.rotate(self.bob, "bob", "#lab")
        self.assertEqual({decode(f)["code"] for f in frames if f.verb == "ERROR"},
                         {"LOG_CONFLICT"})

    def test_malformed_entries(self):
        """An entry that is not canonical, has wrong types or names another room is BAD_ENTRY."""
        state = self.log.state("#lab")
        good = author.part(identity("bob"), state, "", NOW)
        document = json.loads(good.data)
        document["room"] = 5
        odd = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        other = LogEntry("#other", state.length, state.head, "part", fingerprint("bob"), NOW,
                         {"reason": ""})
        for data, signature in [(odd, good.signature), (good.data + b" ", good.signature),
                                (other.encode(), other.sign(identity("bob")))]:
            frames = self.bob.request("APPEND", "#lab", str(state.length), b64encode(data),
                                      b64encode(signature))
            self.assertEqual(error_code(frames), "BAD_ENTRY")

    def test_history_and_sync(self):
        """History pages by server seq; SYNC returns state, keys and missed messages."""
        self.rotate()
        for n in range(5):
            self.say(text=f"m{n}")
        self.bob.frames()
        page = self.bob.request("HISTORY", "#lab", "before", "4", "2")
        self.assertEqual([decode(f)["server_seq"] for f in page[:-1]], [2, 3])
        synced = self.bob.request("SYNC", "#lab=3")
        self.assertEqual(verbs_of(synced), ["ROOM", "KEY", "MESSAGE", "MESSAGE", "OK"])
        self.assertEqual(decode(synced[0])["log_length"], 3)
        self.assertEqual(error_code(self.bob.request("SYNC", "lab=x")), "BAD_ARGUMENTS")


class KeyRequestTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.server = Server(path=self.path)
        self.log = Members()
        self.alice = self.server.user("alice")
        self.log.join(self.alice, "alice", "#lab")
        self.log.rotate(self.alice, "alice", "#lab", history="shared")

    def test_request_served_by_online_holder(self):
        """A newcomer's key request goes to an online holder, who shares the key by
        an entry, and the wrap comes back as KEY."""
        carol = self.server.user("carol")
        self.log.join(carol, "carol", "#lab")
        self.alice.frames()
        self.assertEqual(verbs_of(carol.request("KEYREQ", "#lab")), ["PENDING", "OK"])
        [request] = self.alice.frames()
        self.assertEqual((request.verb, decode(request)["nick"]), ("WRAPREQ", "carol"))
        key = self.log.keys[("#lab", 1)]
        wrapped = wrap_key(key, identity("carol").public, "#lab", 1)
        pair = f"{b64encode(fingerprint('carol'))}:{b64encode(wrapped)}"
        self.assertEqual(error_code(self.alice.request("HANDOVER", "#lab", "1", pair)),
                         "NOT_MEMBER")
        self.log.share(self.alice, "alice", "#lab", "carol")
        self.alice.request("HANDOVER", "#lab", "1", pair)
        delivered = [f for f in carol.frames() if f.verb == "KEY"]
        self.assertEqual([decode(f)["wrap"] for f in delivered], [wrapped])

    def test_request_waits_for_holder_across_restart(self):
        """With every holder offline the request waits, survives a restart, and reaches
        the first holder to log in."""
        self.alice.protocol.connectionLost(Failure(ConnectionDone()))
        carol = self.server.user("carol")
        self.log.join(carol, "carol", "#lab")
        carol.request("KEYREQ", "#lab")
        self.server.service.store.close()
        restarted = Server(path=self.path)
        alice = restarted.user("alice")
        [request] = alice.frames()
        self.assertEqual((request.verb, decode(request)["nick"]), ("WRAPREQ", "carol"))

    def test_withheld_is_told(self):
        """A holder may withhold the key; the requester is told who and why."""
        carol = self.server.user("carol")
        self.log.join(carol, "carol", "#lab")
        carol.request("KEYREQ", "#lab")
        self.alice.frames()
        self.alice.request("WITHHOLD", "#lab", "1", "carol", "unverified", "verify me first")
        [withheld] = carol.frames()
        self.assertEqual((decode(withheld)["by"], decode(withheld)["code"]), ("alice", "unverified"))
        self.assertEqual(error_code(self.alice.request("WITHHOLD", "#lab", "1", "carol", "x")),
                         "NO_SUCH_REQUEST")

    def test_no_key_yet(self):
        """Asking for the key of a room that has none says so."""
        self.log.join(self.alice, "alice", "#empty")
        self.assertEqual(error_code(self.alice.request("KEYREQ", "#empty")), "NO_EPOCH")


class LoggingTests(SynchronousTestCase):
    def test_logs_hold_no_secrets(self):
        """A conversation logs connections and room changes, but no token, signature or
        wrapped key, in any form."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        server, log = Server(), Members()
        alice, bob = server.user("alice"), server.user("bob")
        log.join(alice, "alice", "#lab")
        log.join(bob, "bob", "#lab")
        _, wraps = log.rotate(alice, "alice", "#lab")
        log.message(alice, "alice", "#lab", text="secret words")
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
        log = Members()
        names = ("alice", "bob", "carol", "dave")
        self.users = [self.server.user(name) for name in names]
        for client, name, room in zip(self.users, names, ("#a", "#b", "#c", "#d")):
            log.join(client, name, room)
        for client, name in zip(self.users[1:], names[1:]):
            log.join(client, name, "#a")

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
        self.log = Members()
        self.alice, self.bob, self.carol = (self.server.user(n) for n in ("alice", "bob", "carol"))
        for client, name in zip((self.alice, self.bob, self.carol), ("alice", "bob", "carol")):
            self.log.join(client, name, "#lab")
        self.log.rotate(self.alice, "alice", "#lab", ("alice", "bob"), history="shared")
        for client in (self.alice, self.bob, self.carol):
            client.frames()

    def test_only_holders_withhold(self):
        """A member who holds no key cannot withhold someone else's key request."""
        dave = self.server.user("dave")
        self.log.join(dave, "dave", "#lab")
        dave.request("KEYREQ", "#lab")
        self.assertEqual(error_code(self.carol.request("WITHHOLD", "#lab", "1", "dave", "x")),
                         "NOT_ALLOWED")

    def test_key_request_refiled_after_junk_wrap(self):
        """A junk wrap does not stop its target from asking again."""
        self.log.share(self.alice, "alice", "#lab", "carol")
        self.alice.request("HANDOVER", "#lab", "1",
                           f"{b64encode(fingerprint('carol'))}:{b64encode(b'x' * 384)}")
        self.carol.frames()
        self.assertEqual(verbs_of(self.carol.request("KEYREQ", "#lab")), ["PENDING", "OK"])

    def test_deleted_room_fails_only_its_messages(self):
        """A room deleted while its message waits in a batch fails that message alone."""
        self.log.join(self.alice, "alice", "#other")
        self.log.rotate(self.alice, "alice", "#other")
        self.log.message(self.alice, "alice", "#other", text="queue me")
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

    def test_epoch_entry_with_wrong_types(self):
        """An epoch entry with a number where a name belongs is BAD_ENTRY."""
        state = self.log.state("#lab")
        _, signed, _ = author.epoch(identity("alice"), state, [identity("alice").public], "x",
                                    NOW)
        document = json.loads(signed.data)
        document["body"]["recipients"] = 5
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        frames = self.alice.request("ROTATE", "#lab", str(state.length), b64encode(data),
                                    b64encode(b"s" * 384), b64encode(b"w" * 384))
        self.assertEqual(error_code(frames), "BAD_ENTRY")

    def test_big_replies_are_paged(self):
        """History never answers with more than the reply budget; the rest is paged."""
        from securechat.constants import REPLY_BUDGET_BYTES

        for n in range(40):
            self.log.message(self.alice, "alice", "#lab", text="x" * 15000)
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
        self.log = Members()
        self.alice = self.server.user("alice")
        self.log.join(self.alice, "alice", "#lab")
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
