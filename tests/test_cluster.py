"""Two daemons sharing one database, joined by an in-memory bus: messages,
membership and key requests cross between them, and lost notices or a bus
outage cost a delay, never a message. (tests.test_scaleout runs the same on
PostgreSQL and Redis with real daemons.)"""

from functools import partial
from types import SimpleNamespace

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import PRESENCE_HEARTBEAT_SECONDS, PRESENCE_MISSED_HEARTBEATS
from securechat.server import events
from securechat.server.cluster import ClusterFanOut, decode_notice, encode_notice
from securechat.server.store import MessageRow
from securechat.wire import b64encode, encode_frame
from tests.identities import identity
from tests.serverharness import Server, decode, verbs_of
from tests.logscript import Members


class MemoryBus:
    """Buses of one process: what one publishes, the others receive a turn later."""

    def __init__(self, network, clock, on_notice, on_connected):
        self.network, self.clock = network, clock
        self.on_notice, self.on_connected = on_notice, on_connected
        self.up = False
        self.dropped = 0

    def start(self):
        self.network.append(self)
        self.up = True
        self.on_connected(True)
        return defer.succeed(None)

    def stop(self):
        self.up = False
        return defer.succeed(None)

    def publish(self, data):
        if not self.up:
            self.dropped += 1
            return
        for bus in self.network:
            if bus is not self and bus.up:
                self.clock.callLater(0, bus.on_notice, data)

    def cut(self):
        self.up = False

    def restore(self):
        self.up = True
        self.on_connected(False)


class ClusterTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        network = []
        path = self.mktemp()
        self.daemons = [
            Server(self.clock, path=path,
                   fanout=ClusterFanOut(partial(MemoryBus, network, self.clock), self.clock))
            for _ in range(2)
        ]
        self.buses = network
        self.keys = Members()

    def settle(self):
        """Run every notice and every read they cause."""
        for _ in range(50):
            if not any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()):
                return
            self.clock.advance(0)

    def user(self, daemon, name):
        client = self.daemons[daemon].user(name)
        self.settle()
        return client

    def room_with(self, *members):
        """#lab with members (name, daemon), keyed by the first; everyone's output read."""
        clients = {}
        for name, daemon in members:
            clients[name] = self.user(daemon, name)
            self.keys.join(clients[name], name, "#lab")
            self.settle()
        owner = members[0][0]
        self.keys.rotate(clients[owner], owner, "#lab")
        self.settle()
        for client in clients.values():
            client.frames()
        return clients

    def send(self, clients, sender):
        frames = self.keys.message(clients[sender], sender, "#lab", 1)
        self.settle()
        return frames

    def test_room_made_on_one_daemon_is_joined_on_the_other(self):
        """A room created through daemon A can be joined through daemon B, as a member."""
        alice = self.user(0, "alice")
        self.keys.join(alice, "alice", "#lab")
        self.settle()
        bob = self.user(1, "bob")
        frames = self.keys.join(bob, "bob", "#lab")
        [room] = [f for f in frames if f.verb == "ROOM"]
        self.assertEqual(decode(room)["role"], "member")
        self.settle()
        self.assertIn("ENTRY", verbs_of(alice.frames()))

    def test_room_unheard_of_is_joined_not_created_twice(self):
        """A join on daemon B for a room A made a moment ago, before B heard of it,
        joins that room as a member instead of failing or making another."""
        alice = self.user(0, "alice")
        self.buses[0].cut()
        self.keys.join(alice, "alice", "#lab")
        self.buses[0].up = True
        bob = self.user(1, "bob")
        frames = self.keys.join(bob, "bob", "#Lab")
        self.settle()
        [room] = [f for f in frames if f.verb == "ROOM"]
        self.assertEqual((decode(room)["role"], frames[-1].verb), ("member", "OK"))
        self.assertEqual(len(self.daemons[1].service.rooms), 1)

    def test_member_unheard_of_is_read_in_with_the_room(self):
        """A room naming an account another daemon registered, whose notice was
        lost, brings that account in: WHO lists it instead of failing."""
        self.buses[0].cut()
        alice = self.user(0, "alice")
        self.buses[0].up = True
        self.keys.join(alice, "alice", "#lab")
        self.settle()
        bob = self.user(1, "bob")
        self.keys.join(bob, "bob", "#lab")
        frames = bob.request("WHO", "#lab")
        self.assertEqual(sorted(decode(f)["nick"] for f in frames if f.verb == "MEMBER"),
                         ["alice", "bob"])

    def test_who_reads_members_fresh(self):
        """WHO, which a client asks before wrapping a new key, lists a member who
        joined through the other daemon even if that notice was lost."""
        alice = self.user(0, "alice")
        self.keys.join(alice, "alice", "#lab")
        self.settle()
        bob = self.user(1, "bob")
        self.buses[1].cut()
        self.keys.join(bob, "bob", "#lab")
        frames = alice.request("WHO", "#lab")
        self.assertEqual(sorted(decode(f)["nick"] for f in frames if f.verb == "MEMBER"),
                         ["alice", "bob"])

    def test_join_survives_a_re_read_that_began_before_it(self):
        """A re-read of the room that began before a join committed, and so
        lacks the joiner, is dropped when it lands: the joiner stays a member."""
        alice = self.user(0, "alice")
        self.keys.join(alice, "alice", "#lab")
        self.settle()
        service = self.daemons[1].service
        room = service.rooms.find("#lab")
        before = self.successResultOf(service.store.load_room(room.id))
        bob = self.user(1, "bob")
        in_flight = defer.Deferred()
        reads = iter([in_flight])
        service.store.load_room = lambda room_id: next(reads, defer.Deferred())
        service.replica.reload_room(room.id)
        frames = self.keys.join(bob, "bob", "#lab")
        self.assertEqual(verbs_of(frames)[-2:], ["ROOM", "OK"])
        in_flight.callback(before)
        self.assertIn(service.accounts.find("bob").id, room.members)

    def test_message_reaches_a_member_on_the_other_daemon(self):
        """A message acknowledged on daemon A reaches bob on daemon B, with its server seq."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        [ack] = self.send(clients, "alice")
        self.assertEqual((ack.verb, ack.args), ("OK", ("1",)))
        [message] = clients["bob"].frames()
        self.assertEqual((decode(message)["sender"], decode(message)["server_seq"]), ("alice", 1))

    def test_next_in_line_needs_no_database_read(self):
        """A message whose notice arrives in order is delivered from the notice;
        only a gap makes the other daemon read the database."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        store = self.daemons[1].service.store
        reads = []
        history = store.history
        store.history = lambda *args: reads.append(args) or history(*args)
        self.send(clients, "alice")
        self.assertEqual((len(clients["bob"].frames()), reads), (1, []))
        self.buses[0].cut()
        self.send(clients, "alice")
        self.buses[0].up = True
        self.send(clients, "alice")
        self.assertEqual([decode(f)["server_seq"] for f in clients["bob"].frames()], [2, 3])
        self.assertEqual(len(reads), 1)

    def test_senders_on_both_daemons_are_seen_in_seq_order(self):
        """Members on each daemon see every message once, in server seq order, whoever sent it."""
        clients = self.room_with(("alice", 0), ("bob", 1), ("carol", 0), ("dave", 1))
        for sender in ("alice", "bob", "bob", "alice", "bob"):
            self.send(clients, sender)
        for observer in ("carol", "dave"):
            seqs = [decode(f)["server_seq"] for f in clients[observer].frames()]
            self.assertEqual(seqs, [1, 2, 3, 4, 5])

    def test_simultaneous_senders_never_reorder(self):
        """Messages committed in the same instant on both daemons reach every member in seq order."""
        clients = self.room_with(("alice", 0), ("bob", 1), ("carol", 0), ("dave", 1))
        for sender in ("alice", "bob"):
            [line] = self.keys_lines(sender, 1)
            clients[sender].protocol.dataReceived(line)
        self.settle()
        for observer in ("carol", "dave"):
            seqs = [decode(f)["server_seq"] for f in clients[observer].frames()]
            self.assertEqual(seqs, [1, 2])

    def keys_lines(self, sender, count):
        """C{count} MSG lines from C{sender}, not yet sent."""
        lines = []

        class Capture:
            def request(self, verb, *args):
                lines.append(encode_frame(verb, f"m{len(lines)}", *args) + b"\n")

        for _ in range(count):
            self.keys.message(Capture(), sender, "#lab", 1)
        return lines

    def test_lost_notice_is_made_up_by_the_next(self):
        """A message whose notice was lost reaches the other daemon, in order, with the next one."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        sender_bus = self.buses[0]
        sender_bus.cut()
        self.send(clients, "alice")
        sender_bus.up = True
        self.send(clients, "alice")
        self.assertEqual([decode(f)["server_seq"] for f in clients["bob"].frames()], [1, 2])

    def test_bus_outage_is_caught_up_from_the_database(self):
        """After the bus comes back, a daemon delivers what was sent and applies what changed meanwhile."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        self.buses[1].cut()
        self.send(clients, "alice")
        self.send(clients, "alice")
        clients["alice"].request("TOPIC", "#lab", "while you were away")
        self.assertEqual(clients["bob"].frames(), [])
        self.buses[1].restore()
        self.settle()
        self.assertEqual([decode(f)["server_seq"] for f in clients["bob"].frames()], [1, 2])
        self.assertEqual(self.daemons[1].service.rooms.find("#lab").topic, "while you were away")

    def test_key_request_is_served_by_a_holder_on_the_other_daemon(self):
        """A newcomer on daemon B asking for the key is answered by the holder on daemon A."""
        clients = self.room_with(("alice", 0))
        bob = self.user(1, "bob")
        self.keys.join(bob, "bob", "#lab")
        self.settle()
        clients["alice"].frames()
        self.assertEqual(verbs_of(bob.request("KEYREQ", "#lab")), ["PENDING", "OK"])
        self.settle()
        [request] = [f for f in clients["alice"].frames() if f.verb == "WRAPREQ"]
        self.assertEqual(decode(request)["nick"], "bob")

    def test_quiet_daemon_is_forgotten(self):
        """Users of a daemon that stops announcing itself stop counting as online."""
        self.room_with(("alice", 0))
        self.clock.advance(PRESENCE_HEARTBEAT_SECONDS)
        self.settle()
        fanout = self.daemons[1].service.fanout
        alice = self.daemons[0].service.accounts.find("alice").id
        self.assertTrue(fanout.online(alice))
        self.buses[0].cut()
        for _ in range(PRESENCE_MISSED_HEARTBEATS + 1):
            self.clock.advance(PRESENCE_HEARTBEAT_SECONDS)
            self.settle()
        self.assertFalse(fanout.online(alice))


    def unheard_of_messages(self):
        """Two of alice's messages that daemon B has not heard of, and a first
        read of them that B starts and that finishes when the test says."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        self.buses[0].cut()
        self.send(clients, "alice")
        self.send(clients, "alice")
        service = self.daemons[1].service
        room = service.rooms.find("#lab")
        history = service.store.history
        rows = self.successResultOf(history(room.id, None, 0, 10))
        first_read, reads = defer.Deferred(), []

        def read(*args):
            reads.append(args)
            return first_read if len(reads) == 1 else history(*args)

        service.store.history = read
        service.replica.messages_up_to(room.id, 2)
        return clients, service, room, rows, first_read

    def test_message_stored_during_a_catch_up_is_delivered_once(self):
        """A message delivered as next in line while older ones are being read
        back reaches members once: the read skips it."""
        clients, service, room, rows, pending = self.unheard_of_messages()
        line = events.line("*", events.message(room, rows[0], "alice"))
        service.replica.deliver(room, rows[0], line)
        pending.callback(rows)
        self.assertEqual([decode(f)["server_seq"] for f in clients["bob"].frames()], [1, 2])


    def test_room_re_read_during_a_catch_up_delivers_each_once(self):
        """A room re-read (after a rotation elsewhere, say) that lands while its
        messages are being read back does not make them go out twice."""
        clients, service, room, rows, first_read = self.unheard_of_messages()
        self.successResultOf(service.replica.reload_room(room.id))
        first_read.callback(rows)
        self.settle()
        self.assertEqual([decode(f)["server_seq"] for f in clients["bob"].frames()], [1, 2])

    def test_own_message_read_back_before_its_ack_is_not_echoed(self):
        """A message this daemon stored, read back by a catch-up before its
        commit came back, still never goes to the connection that sent it;
        other members get it once."""
        clients = self.room_with(("alice", 0), ("bob", 1), ("carol", 1))
        self.buses[0].cut()
        self.send(clients, "alice")
        service = self.daemons[1].service
        store = service.messages._store
        append, held = store.append_messages, []

        def committed_but_not_answered(rows):
            result = self.successResultOf(append(rows))
            held.append(result)
            return defer.Deferred()

        store.append_messages = committed_but_not_answered
        answer = self.keys.message(clients["bob"], "bob", "#lab", 1)
        self.assertEqual((answer, len(held)), ([], 1))
        service.replica.messages_up_to(service.rooms.find("#lab").id, 1)
        self.settle()
        self.assertEqual([decode(f)["server_seq"] for f in clients["bob"].frames()], [1])
        self.assertEqual([decode(f)["server_seq"] for f in clients["carol"].frames()], [1, 2])

    def test_a_copy_sent_again_keeps_the_senders_exclusion(self):
        """A copy of a message sent again (on the same connection or a new one)
        while the first is being stored is not the one remembered, so its
        DUPLICATE answer forgets nothing: the first copy still leaves out the
        connection that sent it when it is delivered."""
        replica = self.daemons[1].service.replica
        excluded = []
        self.daemons[1].service.fanout.deliver_here = lambda members, line, exclude=None: (
            excluded.append(exclude))
        row = MessageRow(1, 2, 1, 7, b"m", b"t", b"s", 0.0, server_seq=5)
        first, second = object(), object()
        self.assertTrue(replica.sending(row, first))
        self.assertFalse(replica.sending(row, first))
        self.assertFalse(replica.sending(row, second))
        replica.deliver(SimpleNamespace(id=1, last_seq=4, members={}), row, b"line")
        self.assertEqual(excluded, [first])

    def test_deleted_room_forgets_its_senders(self):
        """A message stored in a room deleted before it could be delivered does
        not keep its sender's connection remembered: a catch-up that finds the
        room gone forgets it."""
        replica = self.daemons[1].service.replica
        row = MessageRow(99, 2, 1, 7, b"m", b"t", b"s", 0.0, server_seq=5)
        self.assertTrue(replica.sending(row, object()))
        replica.deliver(SimpleNamespace(id=99, last_seq=3, members={}), row, b"line")
        self.settle()
        self.assertTrue(replica.sending(row, object()))

    def test_wrap_for_an_epoch_made_elsewhere_is_taken(self):
        """A holder who rotated through daemon A and, A gone before its notice,
        hands a member its wrap again through daemon B is heard: B reads the
        room first."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        self.buses[0].cut()
        _, wraps = self.keys.rotate(clients["alice"], "alice", "#lab")
        moved = self.daemons[1].user("alice")
        clients["bob"].frames()
        frames = moved.request("HANDOVER", "#lab", "2", f"{b64encode(identity('bob').fingerprint)}:"
                                                        f"{b64encode(wraps[identity('bob').fingerprint])}")
        self.settle()
        self.assertEqual(verbs_of(frames)[-1], "OK", frames)
        self.assertIn("KEY", verbs_of(clients["bob"].frames()))

    def test_entry_after_one_made_elsewhere_is_taken(self):
        """An entry appended through daemon B right after one appended through
        daemon A, whose notice B has not heard, is stored: B reads the log first."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        self.buses[0].cut()
        carol = self.user(0, "carol")
        self.keys.join(carol, "carol", "#lab")
        frames = self.keys.part(clients["bob"], "bob", "#lab")
        self.assertEqual(verbs_of(frames)[-1], "OK", frames)

    def test_withhold_for_an_epoch_made_elsewhere_is_taken(self):
        """A holder who declines a request for an epoch it made through daemon A,
        A gone before its notice, is heard through daemon B, which reads the
        room first: the requester is told why instead of waiting on."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        clients["bob"].request("KEYREQ", "#lab")
        self.settle()
        self.buses[0].cut()
        self.keys.rotate(clients["alice"], "alice", "#lab", ["alice"])
        moved = self.daemons[1].user("alice")
        frames = moved.request("WITHHOLD", "#lab", "2", "bob", "unavailable", "not now")
        self.settle()
        self.assertEqual(verbs_of(frames)[-1], "OK", frames)
        self.assertIn("WITHHELD", verbs_of(clients["bob"].frames()))

    def test_message_in_an_epoch_made_elsewhere_is_taken(self):
        """A message in an epoch rotated through the other daemon, whose notice
        has not arrived, is stored: the daemon reads the room first."""
        clients = self.room_with(("alice", 0), ("bob", 1))
        self.buses[0].cut()
        self.keys.rotate(clients["alice"], "alice", "#lab")
        self.buses[0].up = True
        [ack] = self.keys.message(clients["bob"], "bob", "#lab", 2)
        self.assertEqual(ack.verb, "OK")

    def test_every_message_counts_once_towards_rotation(self):
        """Each daemon counts every message of the current epoch once, its own
        and the other's, whether delivered in line or read back after a gap."""
        clients = self.room_with(("alice", 0), ("bob", 1), ("carol", 0), ("dave", 1))
        for sender in ("alice", "bob"):
            [line] = self.keys_lines(sender, 1)
            clients[sender].protocol.dataReceived(line)
        self.settle()
        self.send(clients, "bob")
        counts = [d.service.rooms.find("#lab").epoch_messages for d in self.daemons]
        self.assertEqual(counts, [3, 3])


class NoticeTests(SynchronousTestCase):
    def test_notice_round_trip_keeps_binary_payload(self):
        """A notice's header and its line (any bytes) come back as they were sent."""
        payload = b"MESSAGE * #lab 1 alice\n\xff\x00"
        self.assertEqual(decode_notice(encode_notice("line", {"users": [1, 2]}, payload)),
                         ({"kind": "line", "users": [1, 2]}, payload))
