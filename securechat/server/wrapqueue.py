# -*- test-case-name: tests.test_wrapqueue -*-
"""The durable queue of members waiting for a room key, and who serves them.

A request names a room and a member who lacks its current key. It is pushed
to exactly one online key holder at a time; if that holder leaves without
answering, the next one gets it. Requests live in the store too, so they
survive restarts and wait for the first holder to come back.
"""

from securechat.server.store import RoomRow, WrapRequestRow


class WrapRequestQueue:
    def __init__(self, requests: list[WrapRequestRow]):
        self._requests: dict[tuple[int, int], WrapRequestRow] = {}
        self._assigned: dict[tuple[int, int], int] = {}
        for request in requests:
            self.put(request)

    def get(self, room_id: int, user_id: int) -> WrapRequestRow | None:
        return self._requests.get((room_id, user_id))

    def put(self, request: WrapRequestRow) -> None:
        key = (request.room_id, request.user_id)
        self._requests[key] = request
        self._assigned.pop(key, None)

    def remove(self, room_id: int, user_id: int) -> None:
        self._requests.pop((room_id, user_id), None)
        self._assigned.pop((room_id, user_id), None)

    def remove_room(self, room_id: int) -> None:
        for key in [k for k in self._requests if k[0] == room_id]:
            self.remove(*key)

    def replace_room(self, room_id: int, requests: list[WrapRequestRow]) -> None:
        """A room's requests as another daemon left them; assignments start over."""
        self.remove_room(room_id)
        for request in requests:
            self.put(request)

    def waiting_rooms(self) -> set[int]:
        return {room_id for room_id, _ in self._requests}

    def for_user(self, user_id: int) -> list[WrapRequestRow]:
        return [r for (_, u), r in self._requests.items() if u == user_id]

    def assign(self, room: RoomRow, online: set[int]) -> list[tuple[WrapRequestRow, int]]:
        """Give each waiting, unassigned request in C{room} to an online holder.

        @param online: ids of users with a live connection.
        @return: (request, holder) pairs to push now.
        """
        pushes = []
        holders = sorted(room.holders & online)
        for (room_id, user_id), request in sorted(self._requests.items()):
            if room_id != room.id or request.withheld_code or (room_id, user_id) in self._assigned:
                continue
            candidates = [h for h in holders if h != user_id]
            if candidates:
                holder = candidates[len(pushes) % len(candidates)]
                self._assigned[(room_id, user_id)] = holder
                pushes.append((request, holder))
        return pushes

    def unassign_holder(self, holder: int) -> set[int]:
        """Forget what C{holder} was asked to serve; @return: the rooms to reassign."""
        rooms = {k[0] for k, h in self._assigned.items() if h == holder}
        for key in [k for k, h in self._assigned.items() if h == holder]:
            del self._assigned[key]
        return rooms
