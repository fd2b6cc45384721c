"""A Hypothesis state machine that drives the server protocol with random
room operations by several users, each an entry of the room's log as an
honest member makes it, and checks the daemon against a plain model of
rooms, roles, members and bans after every step."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from twisted.trial.unittest import SynchronousTestCase

from securechat.roomlog import RoomState, author
from securechat.wire import b64encode
from tests.identities import identity
from tests.serverharness import Server

NOW = 1000

USERS = ["alice", "bob", "carol"]
ROOMS = ["#a", "#b"]
RANKS = {"member": 0, "op": 1, "owner": 2}


class RoomModel:
    def __init__(self):
        self.members: dict[str, str] = {}
        self.bans: set[str] = set()
        self.invite_only = False


class ServerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.server = Server()
        self.clients = {name: self.server.user(name) for name in USERS}
        self.model: dict[str, RoomModel] = {}

    def reply(self, user, verb, room, signed, *extra):
        frames = self.clients[user].request(verb, room, str(signed.entry.index),
                                            b64encode(signed.data), b64encode(signed.signature),
                                            *extra)
        for client in self.clients.values():
            client.frames()
        [final] = [f for f in frames if f.verb in ("OK", "ERROR")]
        return final

    def state(self, room) -> RoomState:
        """The log as the server has it: an honest member's view, fetched."""
        found = self.server.service.rooms.find(room)
        return found.state if found is not None and found.state else RoomState(room=room)

    def append(self, user, room, build):
        return self.reply(user, "APPEND", room, build(identity(user), self.state(room)))

    @rule(user=st.sampled_from(USERS), room=st.sampled_from(ROOMS))
    def join(self, user, room):
        state = self.state(room)
        me = identity(user)
        if not state.length:
            signed = author.genesis(me, room, user, NOW)
        else:
            invite = next((h for h, i in state.invites.items() if i.invitee == me.fingerprint),
                          b"")
            signed = author.join(me, state, user, NOW, invite)
        final = self.reply(user, "JOIN", room, signed)
        model = self.model.get(room)
        if model is None:
            self.model[room] = model = RoomModel()
            model.members[user] = "owner"
            expected = "OK"
        elif user in model.members:
            expected = "OK"
        elif user in model.bans:
            expected = "BANNED"
        elif model.invite_only and not invite:
            expected = "INVITE_ONLY"
        else:
            model.members[user] = "owner" if not model.members else "member"
            expected = "OK"
        self.assertOutcome(final, expected)

    @rule(user=st.sampled_from(USERS), room=st.sampled_from(ROOMS))
    def part(self, user, room):
        final = self.append(user, room, lambda me, s: author.part(me, s, "", NOW))
        model = self.guard(final, room, user)
        if model is None:
            return
        self.remove(model, user)
        self.assertOutcome(final, "OK")

    @rule(actor=st.sampled_from(USERS), subject=st.sampled_from(USERS),
          room=st.sampled_from(ROOMS), ban=st.booleans())
    def kick(self, actor, subject, room, ban):
        final = self.append(actor, room, lambda me, s: author.kick(
            me, s, identity(subject).fingerprint, "", NOW, ban=ban))
        model = self.guard(final, room, actor)
        if model is None:
            return
        role = model.members[actor]
        if role not in ("op", "owner") or RANKS[model.members.get(subject, "member")] >= RANKS[role]:
            return self.assertOutcome(final, "BAD_ENTRY")
        if (subject not in model.members and not ban) or (ban and subject in model.bans):
            return self.assertOutcome(final, "BAD_ENTRY")
        if subject in model.members:
            self.remove(model, subject)
        if ban:
            model.bans.add(subject)
        self.assertOutcome(final, "OK")

    @rule(actor=st.sampled_from(USERS), subject=st.sampled_from(USERS),
          room=st.sampled_from(ROOMS))
    def make_op(self, actor, subject, room):
        final = self.append(actor, room, lambda me, s: author.role(
            me, s, identity(subject).fingerprint, "op", NOW))
        model = self.guard(final, room, actor, "owner")
        if model is None:
            return
        if subject not in model.members or subject == actor:
            return self.assertOutcome(final, "BAD_ENTRY")
        model.members[subject] = "op"
        self.assertOutcome(final, "OK")

    @rule(actor=st.sampled_from(USERS), subject=st.sampled_from(USERS),
          room=st.sampled_from(ROOMS))
    def invite(self, actor, subject, room):
        final = self.append(actor, room, lambda me, s: author.invite(
            me, s, identity(subject).public, subject, NOW))
        model = self.guard(final, room, actor, "op", "owner")
        if model is None:
            return
        if subject in model.members or subject in model.bans:
            return self.assertOutcome(final, "BAD_ENTRY")
        self.assertOutcome(final, "OK")

    @rule(actor=st.sampled_from(USERS), room=st.sampled_from(ROOMS), on=st.booleans())
    def invite_only(self, actor, room, on):
        final = self.append(actor, room, lambda me, s: author.policy(me, s, NOW,
                                                                     invite_only=on))
        model = self.guard(final, room, actor, "owner")
        if model is None:
            return
        model.invite_only = on
        self.assertOutcome(final, "OK")

    @rule(actor=st.sampled_from(USERS), subject=st.sampled_from(USERS),
          room=st.sampled_from(ROOMS))
    def unban(self, actor, subject, room):
        final = self.append(actor, room, lambda me, s: author.unban(
            me, s, identity(subject).fingerprint, NOW))
        model = self.guard(final, room, actor, "op", "owner")
        if model is None:
            return
        if subject not in model.bans:
            return self.assertOutcome(final, "BAD_ENTRY")
        model.bans.discard(subject)
        self.assertOutcome(final, "OK")

    def guard(self, final, room, actor, *roles):
        """The model room if C{actor} may act there with one of C{roles}; otherwise check
        that the server refused as the model says, and return None."""
        model = self.model.get(room)
        if model is None:
            self.assertOutcome(final, "NO_SUCH_ROOM")
        elif actor not in model.members:
            self.assertOutcome(final, "NOT_MEMBER")
        elif roles and model.members[actor] not in roles:
            self.assertOutcome(final, "BAD_ENTRY")
        else:
            return model
        return None

    @staticmethod
    def remove(model: RoomModel, user: str) -> None:
        """Without its owner, a room's first op, else first member (by when they
        became members), owns it."""
        role = model.members.pop(user)
        if role == "owner" and model.members:
            ops = [u for u, r in model.members.items() if r == "op"]
            model.members[(ops or list(model.members))[0]] = "owner"

    def assertOutcome(self, final, expected):
        got = "OK" if final.verb == "OK" else final.args[0]
        assert got == expected, f"expected {expected}, server said {final}"

    @invariant()
    def rooms_match_model(self):
        service = self.server.service
        for name, model in self.model.items():
            room = service.rooms.find(name)
            members = {service.accounts.by_id(u).nick: r for u, r in room.members.items()}
            bans = {service.accounts.by_id(u).nick for u in room.bans}
            assert members == model.members, (name, members, model.members)
            assert bans == model.bans, (name, bans, model.bans)
            assert room.invite_only == model.invite_only
            owners = [u for u, r in members.items() if r == "owner"]
            assert len(owners) == (1 if members else 0), members

    @invariant()
    def every_connection_alive(self):
        for client in self.clients.values():
            assert not client.transport.disconnecting


class ServerModelTests(SynchronousTestCase):
    def test_random_operations_match_model(self):
        """Random joins, parts, kicks, bans, invites, role and policy entries keep the
        daemon's rooms equal to the model, with exactly one owner per non-empty room."""
        run_state_machine_as_test(
            ServerMachine, settings=settings(max_examples=60, stateful_step_count=30, deadline=None)
        )
