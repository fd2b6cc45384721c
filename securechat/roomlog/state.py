# -*- test-case-name: tests.test_roomlog -*-
"""A room as its signed log makes it: replaying the entries, in order, gives
every client (and the server) the same members, roles, bans, invites,
policy and key epochs. Each rule lives here and only here.

Who may make each kind of entry:

- genesis: whoever creates the room (its owner); an upgrade of a room from
  before the log names its author's role and the epoch it had reached, and
  may be followed by admit entries, by the same author, listing the members
  the room already had;
- join: the joiner, with their keys; in an invite-only room it names the
  invite it uses, which is then spent;
- invite: an op or the owner, for one identity (valid once);
- part: the member leaving; kick and ban: an op or the owner, of a lower
  rank; unban: an op or the owner;
- role: the owner (giving ownership away makes them an op);
- policy (invite-only, history): the owner; a switch to shared history is a
  boundary no key from before it is ever handed on across;
- epoch: any member, naming the next epoch number and its recipients, every
  one of them a member at that point (the author included); in a shared
  room it chains the previous key (prev_box) unless no member holds that
  key any more, and says so (restart);
- share: a holder of the current key, in a shared room after its boundary,
  handing it to a member who lacks it;
- rekey: a member's new identity key (an operator reset), replacing the
  old one, which holds nothing from then on.

When the owner leaves, the first op (else the first member) is owner, by the
order they became members: derived, so nobody signs it.
"""

import bisect
import hashlib
from dataclasses import dataclass, field

from securechat.constants import HOLDERS_KEPT_EPOCHS
from securechat.crypto import transcript as ctx
from securechat.crypto.identity import PublicIdentity
from securechat.names import fold, is_nick
from securechat.roomlog.entry import (
    ADMIT,
    BAN,
    EPOCH,
    GENESIS,
    HISTORY_POLICIES,
    INVITE,
    JOIN,
    KICK,
    NO_ENTRY,
    PART,
    POLICY,
    REKEY,
    ROLE,
    ROLES,
    SHARE,
    UNBAN,
    LogEntry,
    LogError,
    SignedEntry,
    b64,
    identity_of,
    unb64,
)

RANKS = {"member": 0, "op": 1, "owner": 2}

# Sorts after every fingerprint, to find a log index among (index, fingerprint) pairs.
_AFTER_ANY_KEY = b"\xff" * 33

# Longest reason a part, kick or ban may give (as the server's reasons).
MAX_REASON = 200


@dataclass
class Member:
    nick: str
    role: str
    # The index of the entry that made them a member: order for succession.
    since: int


@dataclass(frozen=True)
class Invite:
    invitee: bytes
    nick: str
    by: bytes
    index: int


@dataclass(frozen=True)
class Epoch:
    number: int
    index: int
    author: bytes
    key_id: bytes
    prev_box: bytes
    restart: bool


@dataclass
class RoomState:
    """The derived state after C{length} entries, the last hashing to C{head}.

    @ivar keys: every identity that was ever a member, by fingerprint: the
        senders of old messages stay checkable after they leave.
    @ivar names: the last nick each of those identities had.
    @ivar holders: per epoch, who was given its key (its recipients, and shares);
        for epochs long past, only what L{forget_holders} was asked to keep.
    @ivar removals: (index, fingerprint) of every removal, in order.
    """

    room: str = ""
    length: int = 0
    head: bytes = NO_ENTRY
    members: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)
    banned: set = field(default_factory=set)
    invites: dict = field(default_factory=dict)
    invite_only: bool = False
    history: str = "joined"
    boundary: int | None = None
    legacy_epoch: int = 0
    epochs: dict = field(default_factory=dict)
    holders: dict = field(default_factory=dict)
    removals: list = field(default_factory=list)
    replaced: dict = field(default_factory=dict)
    upgrade_author: bytes | None = None
    admitting: bool = False

    # -- replay ----------------------------------------------------------------

    def apply(self, signed: SignedEntry, verify: bool = True) -> None:
        """Append one entry, or raise LogError (and change nothing) if it breaks a rule.

        @param verify: check the signature; the server skips it for entries it
            checked itself when it stored them.
        """
        entry = signed.entry
        if entry.index != self.length or entry.prev != self.head:
            raise LogError(f"entry {entry.index} does not follow entry {self.length - 1} "
                           f"of the log")
        if self.room and fold(entry.room) != fold(self.room):
            raise LogError(f"an entry of {entry.room} in the log of {self.room}")
        author = self._author_keys(entry)
        if verify and not entry.verify(signed.signature, author):
            raise LogError(f"entry {entry.index} ({entry.kind}) is not signed by its author")
        rule = _RULES.get(entry.kind)
        if rule is None or (entry.kind == GENESIS) != (entry.index == 0):
            raise LogError(f"entry {entry.index} cannot be a {entry.kind}")
        check, effect = rule
        try:
            check(self, entry)
        except (TypeError, ValueError, KeyError, AttributeError):
            # A value of the wrong type that a rule did not expect: an entry
            # a member signed badly, never a reason to fail the reader.
            raise LogError(f"entry {entry.index} ({entry.kind}) is malformed") from None
        if entry.kind != ADMIT and entry.kind != GENESIS and self.admitting:
            # The upgrade's members are all in: now the room may need an owner.
            self.admitting = False
            self._ensure_owner()
        effect(self, entry)
        self.length += 1
        self.head = entry.hash()

    def _author_keys(self, entry: LogEntry) -> PublicIdentity:
        """The identity that must have signed C{entry}: a member's, or, for an
        entry that makes its author a member, the keys it carries."""
        if entry.kind in (GENESIS, JOIN, REKEY):
            identity = identity_of(entry.body.get("keys"))
            if identity.fingerprint != entry.author:
                raise LogError(f"entry {entry.index} carries keys other than its author's")
            return identity
        if entry.author not in self.members:
            raise LogError(f"entry {entry.index} ({entry.kind}) is by someone who is not a "
                           f"member")
        return self.keys[entry.author]

    # -- queries -----------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The current epoch (0: none yet)."""
        return max(self.epochs, default=0)

    def current(self) -> Epoch | None:
        return self.epochs.get(self.epoch)

    def role(self, fingerprint: bytes) -> str | None:
        member = self.members.get(fingerprint)
        return member.role if member else None

    def by_nick(self, nick: str) -> bytes | None:
        """The member with that nick, if any."""
        return next((fp for fp, m in self.members.items() if fold(m.nick) == fold(nick)), None)

    def holds(self, fingerprint: bytes, epoch: int) -> bool:
        return fingerprint in self.holders.get(epoch, ())

    def forget_holders(self, keep: frozenset = frozenset()) -> None:
        """Forget who held epochs more than HOLDERS_KEPT_EPOCHS before the
        current one, but for the fingerprints in C{keep} (a client's own). No
        rule looks at them (only the current epoch's holders count), and kept
        whole they would grow with every rotation times every member."""
        for number in [n for n in self.holders if n < self.epoch - HOLDERS_KEPT_EPOCHS]:
            held = self.holders[number] & keep
            if held:
                self.holders[number] = held
            else:
                del self.holders[number]

    def stale_holders(self) -> set:
        """Holders of the current key who are no longer members (removed, or a key
        replaced): nobody may encrypt under it any more."""
        return set(self.holders.get(self.epoch, ())) - set(self.members)

    def lacking(self) -> set:
        """Members who do not hold the current key."""
        return set(self.members) - set(self.holders.get(self.epoch, ()))

    def removed_after(self, index: int) -> list:
        """The (index, fingerprint) removals made after entry C{index} (found by
        bisection: they are in log order, and this is asked for each message)."""
        return self.removals[bisect.bisect_right(self.removals, (index, _AFTER_ANY_KEY)):]

    def in_shared_segment(self, info: Epoch) -> bool:
        """Whether an epoch was made since the room last began sharing its history
        (its boundary): only such keys may be handed on, or chained forward."""
        return self.history == "shared" and self.boundary is not None \
            and info.index > self.boundary

    def shareable(self, epoch: int) -> bool:
        """Whether C{epoch}'s key may be handed to a newcomer without a new epoch:
        only the current key of a shared room, made after its boundary."""
        info = self.epochs.get(epoch)
        return epoch == self.epoch and info is not None and self.in_shared_segment(info)

    def chains(self) -> bool:
        """Whether the next epoch must carry the current key (shared history)."""
        return self.shareable(self.epoch)

    def room_code(self) -> str:
        """A short code of the room as of its head: members who compare it at the
        same entry know they are shown the same room (a safety number for rooms)."""
        digest = hashlib.sha256(ctx.transcript(ctx.ROOM_CODE, fold(self.room), self.length,
                                               self.head)).digest()
        number = int.from_bytes(digest[:10], "big") % 10**20
        text = f"{number:020d}"
        return " ".join(text[i:i + 5] for i in range(0, 20, 5))

    # -- persistence -------------------------------------------------------------

    def copy(self) -> "RoomState":
        """An independent copy (identities are immutable and shared)."""
        return RoomState(
            self.room, self.length, self.head,
            {fp: Member(m.nick, m.role, m.since) for fp, m in self.members.items()},
            dict(self.keys), dict(self.names), set(self.banned), dict(self.invites),
            self.invite_only, self.history, self.boundary, self.legacy_epoch,
            dict(self.epochs), {e: set(h) for e, h in self.holders.items()},
            list(self.removals), dict(self.replaced), self.upgrade_author, self.admitting)

    def to_dict(self, identities: dict) -> dict:
        """JSON for the client's state; identities go into C{identities} (by
        fingerprint, shared by every room), not into each room's copy."""
        for fp, identity in self.keys.items():
            identities.setdefault(b64(fp), [b64(identity.sign_der), b64(identity.enc_der),
                                            b64(identity.enc_signature)])
        return {
            "room": self.room, "length": self.length, "head": b64(self.head),
            "members": [[b64(fp), m.nick, m.role, m.since] for fp, m in self.members.items()],
            "keys": sorted(b64(fp) for fp in self.keys),
            "names": {b64(fp): nick for fp, nick in self.names.items()},
            "banned": sorted(b64(fp) for fp in self.banned),
            "invites": [[b64(h), b64(i.invitee), i.nick, b64(i.by), i.index]
                        for h, i in self.invites.items()],
            "invite_only": self.invite_only, "history": self.history,
            "boundary": self.boundary, "legacy_epoch": self.legacy_epoch,
            "epochs": [[e.number, e.index, b64(e.author), b64(e.key_id), b64(e.prev_box),
                        e.restart] for e in self.epochs.values()],
            "holders": {str(n): sorted(b64(fp) for fp in h) for n, h in self.holders.items()},
            "removals": [[i, b64(fp)] for i, fp in self.removals],
            "replaced": {b64(old): b64(new) for old, new in self.replaced.items()},
            "upgrade_author": b64(self.upgrade_author) if self.upgrade_author else None,
            "admitting": self.admitting,
        }

    @classmethod
    def from_dict(cls, data: dict, identities: dict) -> "RoomState":
        def identity(fp_text):
            sign, enc, enc_sig = identities[fp_text]
            return PublicIdentity.from_wire(unb64(sign), unb64(enc), unb64(enc_sig))

        return cls(
            data["room"], data["length"], unb64(data["head"]),
            {unb64(fp): Member(nick, role, since) for fp, nick, role, since in data["members"]},
            {unb64(fp): identity(fp) for fp in data["keys"]},
            {unb64(fp): nick for fp, nick in data["names"].items()},
            {unb64(fp) for fp in data["banned"]},
            {unb64(h): Invite(unb64(i), nick, unb64(by), index)
             for h, i, nick, by, index in data["invites"]},
            data["invite_only"], data["history"], data["boundary"], data["legacy_epoch"],
            {n: Epoch(n, index, unb64(a), unb64(k), unb64(p), restart)
             for n, index, a, k, p, restart in data["epochs"]},
            {int(n): {unb64(fp) for fp in h} for n, h in data["holders"].items()},
            [(i, unb64(fp)) for i, fp in data["removals"]],
            {unb64(old): unb64(new) for old, new in data["replaced"].items()},
            unb64(data["upgrade_author"]) if data["upgrade_author"] else None,
            data["admitting"],
        )

    # -- effects shared by several kinds -----------------------------------------

    def _add_member(self, fingerprint: bytes, identity: PublicIdentity, nick: str, role: str,
                    index: int) -> None:
        self.members[fingerprint] = Member(nick, role, index)
        self.keys[fingerprint] = identity
        self.names[fingerprint] = nick

    def _remove(self, fingerprint: bytes, index: int) -> None:
        self.members.pop(fingerprint, None)
        self.removals.append((index, fingerprint))
        self._drop_invites_by(fingerprint)
        self._ensure_owner()

    def _drop_invites_by(self, fingerprint: bytes) -> None:
        """An op who leaves, or is no longer an op, vouches for nobody any more."""
        self.invites = {h: i for h, i in self.invites.items() if i.by != fingerprint}

    def _ensure_owner(self) -> None:
        """The owner left: the first op, else the first member, owns the room."""
        if not self.members or any(m.role == "owner" for m in self.members.values()):
            return
        ops = [fp for fp, m in self.members.items() if m.role == "op"]
        candidates = ops or list(self.members)
        heir = min(candidates, key=lambda fp: (self.members[fp].since, fp))
        self.members[heir].role = "owner"


# -- the rules, one check and one effect per kind -----------------------------------


def _text(entry: LogEntry, name: str, limit: int = MAX_REASON) -> str:
    value = entry.body.get(name, "")
    if not isinstance(value, str) or len(value) > limit:
        raise LogError(f"entry {entry.index}: {name} must be text of at most {limit} characters")
    return value


def _nick(entry: LogEntry) -> str:
    nick = entry.body.get("nick")
    if not isinstance(nick, str) or not is_nick(nick):
        raise LogError(f"entry {entry.index}: not a nick")
    return nick


def _fingerprint(entry: LogEntry, name: str) -> bytes:
    value = unb64(entry.body.get(name))
    if len(value) != 32:
        raise LogError(f"entry {entry.index}: {name} is not a fingerprint")
    return value


def _body(entry: LogEntry, *names: str) -> None:
    if set(entry.body) != set(names):
        raise LogError(f"entry {entry.index} ({entry.kind}) has fields other than "
                       f"{', '.join(names)}")


def _rank(state: RoomState, fingerprint: bytes) -> int:
    return RANKS[state.role(fingerprint) or "member"]


def _op(state: RoomState, entry: LogEntry) -> None:
    if state.role(entry.author) not in ("op", "owner"):
        raise LogError(f"entry {entry.index} ({entry.kind}) needs an op or the owner")


def _nick_free(state: RoomState, entry: LogEntry, nick: str, besides: bytes = b"") -> None:
    holder = state.by_nick(nick)
    if holder is not None and holder != besides:
        raise LogError(f"entry {entry.index}: {nick} is already a member under another key")


def _check_genesis(state, entry):
    _body(entry, "nick", "keys", "role", "invite_only", "history", "legacy_epoch", "upgrade")
    _nick(entry)
    body = entry.body
    if entry.prev != NO_ENTRY:
        raise LogError("the first entry names an entry before it")
    if body["role"] not in ROLES or (body["role"] != "owner" and not body["upgrade"]):
        raise LogError("a new room's creator is its owner")
    if type(body["invite_only"]) is not bool or type(body["upgrade"]) is not bool \
            or body["history"] not in HISTORY_POLICIES \
            or type(body["legacy_epoch"]) is not int or body["legacy_epoch"] < 0:
        raise LogError("malformed genesis entry")


def _apply_genesis(state, entry):
    body = entry.body
    state.room = entry.room
    state._add_member(entry.author, identity_of(body["keys"]), body["nick"], body["role"], 0)
    state.invite_only, state.history = body["invite_only"], body["history"]
    state.boundary = 0 if body["history"] == "shared" else None
    state.legacy_epoch = body["legacy_epoch"]
    if body["upgrade"]:
        # The owner may be among the members admitted next: nobody is made
        # owner until they all are.
        state.upgrade_author, state.admitting = entry.author, True
    else:
        state._ensure_owner()


def _check_admit(state, entry):
    _body(entry, "nick", "keys", "role")
    nick = _nick(entry)
    identity = identity_of(entry.body["keys"])
    if not state.admitting or entry.author != state.upgrade_author:
        raise LogError(f"entry {entry.index}: only the upgrade's author admits the members a "
                       f"room already had, right after it")
    if identity.fingerprint in state.members or entry.body["role"] not in ROLES:
        raise LogError(f"entry {entry.index}: {nick} cannot be admitted")
    if entry.body["role"] == "owner" and any(m.role == "owner" for m in state.members.values()):
        raise LogError(f"entry {entry.index}: a room has one owner")
    _nick_free(state, entry, nick)


def _apply_admit(state, entry):
    body = entry.body
    identity = identity_of(body["keys"])
    state._add_member(identity.fingerprint, identity, body["nick"], body["role"], entry.index)


def _check_join(state, entry):
    _body(entry, "nick", "keys", "invite")
    nick = _nick(entry)
    if entry.author in state.members:
        raise LogError(f"entry {entry.index}: {nick} is already a member")
    if entry.author in state.banned:
        raise LogError(f"entry {entry.index}: {nick} is banned")
    _nick_free(state, entry, nick)
    invite = entry.body["invite"]
    if invite:
        found = state.invites.get(unb64(invite))
        if found is None or found.invitee != entry.author:
            raise LogError(f"entry {entry.index}: {nick} names an invite that is not theirs "
                           f"or is spent")
    elif state.invite_only:
        raise LogError(f"entry {entry.index}: {nick} joins an invite-only room uninvited")


def _apply_join(state, entry):
    body = entry.body
    if body["invite"]:
        del state.invites[unb64(body["invite"])]
    role = "member" if state.members else "owner"
    state._add_member(entry.author, identity_of(body["keys"]), body["nick"], role, entry.index)


def _check_invite(state, entry):
    _body(entry, "invitee", "nick")
    _op(state, entry)
    invitee = _fingerprint(entry, "invitee")
    _nick(entry)
    if invitee in state.members or invitee in state.banned:
        raise LogError(f"entry {entry.index}: the invitee is a member or banned")


def _apply_invite(state, entry):
    state.invites[entry.hash()] = Invite(unb64(entry.body["invitee"]), entry.body["nick"],
                                         entry.author, entry.index)


def _check_part(state, entry):
    _body(entry, "reason")
    _text(entry, "reason")


def _apply_part(state, entry):
    state._remove(entry.author, entry.index)


def _check_kick(state, entry):
    _body(entry, "target", "reason")
    _text(entry, "reason")
    _op(state, entry)
    target = _fingerprint(entry, "target")
    if target not in state.members:
        raise LogError(f"entry {entry.index}: kicks someone who is not a member")
    if _rank(state, target) >= _rank(state, entry.author):
        raise LogError(f"entry {entry.index}: kicks someone of the same or a higher rank")


def _apply_kick(state, entry):
    state._remove(unb64(entry.body["target"]), entry.index)


def _check_ban(state, entry):
    _body(entry, "target", "reason")
    _text(entry, "reason")
    _op(state, entry)
    target = _fingerprint(entry, "target")
    if target in state.banned or target == entry.author:
        raise LogError(f"entry {entry.index}: bans someone banned already, or its author")
    if _rank(state, target) >= _rank(state, entry.author):
        raise LogError(f"entry {entry.index}: bans someone of the same or a higher rank")


def _apply_ban(state, entry):
    target = unb64(entry.body["target"])
    state.banned.add(target)
    state.invites = {h: i for h, i in state.invites.items() if i.invitee != target}
    if target in state.members:
        state._remove(target, entry.index)


def _check_unban(state, entry):
    _body(entry, "target")
    _op(state, entry)
    if _fingerprint(entry, "target") not in state.banned:
        raise LogError(f"entry {entry.index}: unbans someone who is not banned")


def _apply_unban(state, entry):
    state.banned.discard(unb64(entry.body["target"]))


def _check_role(state, entry):
    _body(entry, "target", "role")
    if state.role(entry.author) != "owner":
        raise LogError(f"entry {entry.index}: only the owner gives roles")
    target = _fingerprint(entry, "target")
    if target not in state.members or target == entry.author \
            or entry.body["role"] not in ROLES:
        raise LogError(f"entry {entry.index}: not a role a member can be given")


def _apply_role(state, entry):
    target = unb64(entry.body["target"])
    if entry.body["role"] == "owner":
        state.members[entry.author].role = "op"
    state.members[target].role = entry.body["role"]
    if entry.body["role"] == "member":
        state._drop_invites_by(target)


def _check_policy(state, entry):
    _body(entry, "invite_only", "history")
    if state.role(entry.author) != "owner":
        raise LogError(f"entry {entry.index}: only the owner sets the room's policy")
    if type(entry.body["invite_only"]) is not bool \
            or entry.body["history"] not in HISTORY_POLICIES:
        raise LogError(f"entry {entry.index}: malformed policy")


def _apply_policy(state, entry):
    history = entry.body["history"]
    if history != state.history:
        state.boundary = entry.index if history == "shared" else None
    state.invite_only, state.history = entry.body["invite_only"], history


def _check_epoch(state, entry):
    _body(entry, "epoch", "key_id", "recipients", "prev_box", "restart", "reason")
    body = entry.body
    _text(entry, "reason")
    number = body["epoch"]
    if type(number) is not int or number != max(state.epoch, state.legacy_epoch) + 1:
        raise LogError(f"entry {entry.index}: epoch {number} is not the next one")
    recipients = body["recipients"]
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients) \
            or recipients != sorted(set(recipients)):
        raise LogError(f"entry {entry.index}: recipients must be a sorted list")
    fingerprints = {unb64(r) for r in recipients}
    if entry.author not in fingerprints or not fingerprints <= set(state.members):
        raise LogError(f"entry {entry.index}: epoch {number} is given to someone who is not "
                       f"a member, or not to its author")
    if len(unb64(body["key_id"])) != 16 or type(body["restart"]) is not bool:
        raise LogError(f"entry {entry.index}: malformed epoch")
    chained, restart = bool(unb64(body["prev_box"])), body["restart"]
    if state.chains():
        # The author may have lost the key itself (a state restored from a
        # backup): only someone else still holding it rules a restart out.
        previous_holders = set(state.holders.get(state.epoch, ())) & set(state.members)
        if restart and previous_holders - {entry.author}:
            raise LogError(f"entry {entry.index}: shared history may restart only when no "
                           f"member holds the previous key")
        if not restart and not chained:
            raise LogError(f"entry {entry.index}: a shared room's epoch must carry the key "
                           f"before it")
        if chained and not state.holds(entry.author, state.epoch):
            raise LogError(f"entry {entry.index}: carries a key its author was never given")
    elif chained or restart:
        raise LogError(f"entry {entry.index}: only a shared room's epoch after its boundary "
                       f"carries the key before it")


def _apply_epoch(state, entry):
    body = entry.body
    state.epochs[body["epoch"]] = Epoch(body["epoch"], entry.index, entry.author,
                                        unb64(body["key_id"]), unb64(body["prev_box"]),
                                        body["restart"])
    state.holders[body["epoch"]] = {unb64(r) for r in body["recipients"]}


def _check_share(state, entry):
    _body(entry, "epoch", "recipient")
    number, recipient = entry.body["epoch"], _fingerprint(entry, "recipient")
    if type(number) is not int or not state.shareable(number) or not state.holds(entry.author, number):
        raise LogError(f"entry {entry.index}: epoch {number}'s key cannot be handed on here, "
                       f"or not by its author")
    if recipient not in state.members or state.holds(recipient, number):
        raise LogError(f"entry {entry.index}: hands a key to someone who is not a member or "
                       f"has it")


def _apply_share(state, entry):
    state.holders[entry.body["epoch"]].add(unb64(entry.body["recipient"]))


def _check_rekey(state, entry):
    _body(entry, "old", "nick", "keys")
    old, nick = _fingerprint(entry, "old"), _nick(entry)
    member = state.members.get(old)
    if member is None or fold(member.nick) != fold(nick):
        raise LogError(f"entry {entry.index}: replaces a key that is not {nick}'s")
    if entry.author in state.members or entry.author in state.banned:
        raise LogError(f"entry {entry.index}: the new key is a member or banned already")


def _apply_rekey(state, entry):
    """The new key is a plain member from here on: anyone (the server too) can
    make a key and claim a nick, so it inherits no role, and no ownership by
    succession; the owner and ops give roles again to whom they recognise."""
    old = unb64(entry.body["old"])
    member = state.members[old]
    state._add_member(entry.author, identity_of(entry.body["keys"]), member.nick, "member",
                      entry.index)
    state.replaced[old] = entry.author
    del state.members[old]
    state.removals.append((entry.index, old))
    state._drop_invites_by(old)
    state._ensure_owner()


_RULES = {
    GENESIS: (_check_genesis, _apply_genesis),
    ADMIT: (_check_admit, _apply_admit),
    JOIN: (_check_join, _apply_join),
    INVITE: (_check_invite, _apply_invite),
    PART: (_check_part, _apply_part),
    KICK: (_check_kick, _apply_kick),
    BAN: (_check_ban, _apply_ban),
    UNBAN: (_check_unban, _apply_unban),
    ROLE: (_check_role, _apply_role),
    POLICY: (_check_policy, _apply_policy),
    EPOCH: (_check_epoch, _apply_epoch),
    SHARE: (_check_share, _apply_share),
    REKEY: (_check_rekey, _apply_rekey),
}


def replay(entries, verify: bool = True, state: RoomState | None = None) -> RoomState:
    """The state after C{entries} (SignedEntry, in order), from C{state} or empty."""
    state = state or RoomState()
    for signed in entries:
        state.apply(signed, verify)
    return state
