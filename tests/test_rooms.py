"""Tests for securechat.server.rooms: the pure room registry."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.server.rooms import RoomLimits, RoomRegistry
from securechat.server.store import RoomRow
from securechat.wire import Code, WireError


def room(room_id=1, name="#lab", members=None, **kwargs):
    return RoomRow(room_id, name, "", False, None, False, 0.0, members=members or {1: "owner"},
                   **kwargs)


class RoomRegistryTests(SynchronousTestCase):
    def assertCode(self, code, f, *args):
        error = self.assertRaises(WireError, f, *args)
        self.assertEqual(error.code, code)

    def test_lookup_is_case_insensitive(self):
        """#Lab and #lab are the same room."""
        registry = RoomRegistry([room(name="#Lab")])
        self.assertIs(registry.find("#lab"), registry.find("#LAB"))
        self.assertCode(Code.NO_SUCH_ROOM, registry.require, "#other")

    def test_create_checks_name_and_reserves(self):
        """A bad name is BAD_NAME; a name being created cannot be created twice."""
        registry = RoomRegistry([])
        self.assertCode(Code.BAD_NAME, registry.check_create, "lab", 1)
        self.assertCode(Code.BAD_NAME, registry.check_create, "#" + "x" * 40, 1)
        registry.check_create("#lab", 1)
        self.assertCode(Code.NOT_ALLOWED, registry.check_create, "#LAB", 2)
        registry.release("#lab")
        registry.check_create("#lab", 2)

    def test_join_checks(self):
        """A full room refuses another member (bans, invites and passwords are the
        log's and the service's)."""
        registry = RoomRegistry([room(members={1: "owner", 2: "member"})],
                                RoomLimits(max_rooms_per_user=5, max_members_per_room=3))
        lab = registry.find("#lab")
        registry.check_join(lab, 3)
        registry.set_members(lab, {1: "owner", 2: "member", 3: "member"})
        self.assertCode(Code.ROOM_FULL, registry.check_join, lab, 4)

    def test_rooms_per_user(self):
        """A user at the room limit can neither create nor join another room."""
        registry = RoomRegistry([room(1, "#a"), room(2, "#b", members={2: "owner"})],
                                RoomLimits(max_rooms_per_user=1))
        self.assertCode(Code.TOO_MANY_ROOMS, registry.check_create, "#c", 1)
        self.assertCode(Code.TOO_MANY_ROOMS, registry.check_join, registry.find("#b"), 1)

    def test_members_follow_the_log(self):
        """Setting a room's members (from its log) updates each user's rooms."""
        registry = RoomRegistry([room(members={1: "owner", 2: "member"})])
        lab = registry.find("#lab")
        registry.set_members(lab, {2: "owner", 3: "member"})
        self.assertEqual(registry.rooms_of(1), [])
        self.assertEqual([r.id for r in registry.rooms_of(3)], [1])
        self.assertEqual(lab.members, {2: "owner", 3: "member"})

    def test_public_rooms_hide_invite_only(self):
        """The public list shows open rooms only."""
        secret = room(2, "#secret")
        secret.invite_only = True
        registry = RoomRegistry([room(1, "#open"), secret])
        self.assertEqual([r.name for r in registry.public_rooms()], ["#open"])

    def test_replaced_room_keeps_its_object(self):
        """A room re-read from the database updates the object already held (a
        request in flight holds it) and the index of each member's rooms."""
        held = room(members={1: "owner", 2: "member"})
        registry = RoomRegistry([held])
        registry.replace_room(room(members={1: "owner", 3: "member"}, epoch=4))
        self.assertIs(registry.find("#lab"), held)
        self.assertEqual((held.members, held.epoch), ({1: "owner", 3: "member"}, 4))
        self.assertEqual([r.id for r in registry.rooms_of(3)], [1])
        self.assertEqual(registry.rooms_of(2), [])
