# -*- test-case-name: tests.test_client_session -*-
"""Answering other members' requests for a room key we hold: wrap it for
them, rotate (in rooms whose newcomers read only what follows), or say why
not. Requests can be pushed more than once and can be overtaken by a
rotation; only a request still owed gets an answer, and only one."""

from twisted.internet import defer

from securechat.crypto.roomkeys import wrap_key
from securechat.names import fold
from securechat.wire import Code, WireError, b64encode


class KeyService:
    """Part of L{securechat.client.session.ClientSession}; see there for the state
    it uses."""

    def _on_wrapreq(self, room, epoch, nick):
        # Our own keys arrive with the login sync; serve once we hold them.
        d = self.when_live().addCallback(lambda _: self._serve_request(room, epoch, nick))
        return d.addErrback(self._request_gone)

    @staticmethod
    def _request_gone(failure):
        """The request was answered meanwhile (by another holder, or by us
        after a second push of it), its epoch has passed, or the server no
        longer counts us among that key's holders: nothing is owed."""
        failure.trap(WireError)
        if failure.value.code not in (Code.NO_SUCH_REQUEST, Code.STALE_EPOCH,
                                      Code.NOT_ALLOWED):
            return failure
        return None

    @defer.inlineCallbacks
    def _serve_request(self, room_name: str, epoch: int, nick: str):
        room = self.rooms.get(fold(room_name))
        if room is None or epoch != room.epoch:
            # Only the current key is ever handed out; a request for another
            # epoch is stale or forged, and is left to expire.
            return
        key = self.keys.key(room_name, epoch)
        if key is None:
            yield self.request("WITHHOLD", room_name, str(epoch), nick, "unavailable",
                               "this member's client no longer holds the key")
            return
        members = yield self._members(room)
        if epoch != room.epoch:
            # A rotation ended while we asked who is in the room: it answered
            # this request, or left it for the server to push again.
            return
        refusal = self._refusal(room, members, nick)
        if refusal is not None:
            code, text = refusal
            self.emit("key_withheld_by_me", room=room.name, nick=nick, code=code, message=text)
            yield self.request("WITHHOLD", room.name, str(epoch), nick, code, text)
            return
        wrap = self._own_wrap(room.name, epoch, nick, members[fold(nick)]["identity"])
        if wrap is not None:
            # Their request crossed the wrap we made for them with this epoch:
            # sending it again shows them nothing a new epoch would hide.
            yield self.request("WRAP", room.name, str(epoch), nick, wrap)
            return
        if room.history == "joined":
            # Handing over this epoch's key would show the newcomer what was
            # said before they joined; a new epoch that includes them does not.
            yield self.rotate(room.name, f"{nick} joined")
            return
        wrapped = wrap_key(key, members[fold(nick)]["identity"], room.name, epoch)
        yield self.request("WRAP", room.name, str(epoch), nick, b64encode(wrapped))
        room.vouched.add(fold(nick))
        self.save()
        self.emit("key_shared", room=room.name, nick=nick, epoch=epoch)

    def _own_wrap(self, room_name: str, epoch: int, nick: str, identity) -> str | None:
        """The wrap we made for C{nick} with our epoch C{epoch}, if it was made
        for the keys they hold now (not before an operator reset them)."""
        made_in, given = self._own_wraps.get(fold(room_name), (None, {}))
        fingerprint, wrap = given.get(fold(nick), (None, None))
        return wrap if made_in == epoch and fingerprint == identity.fingerprint else None
