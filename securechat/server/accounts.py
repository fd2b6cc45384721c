# -*- test-case-name: tests.test_accounts -*-
"""Accounts: nicks bound to public keys, registration policy, login checks.

Pure state: no sockets, no database; the service persists what this decides.
"""

from securechat.crypto.identity import IdentityError, PublicIdentity, verify_login
from securechat.names import check_nick, fold
from securechat.server.passwords import token_digest
from securechat.server.store import UserRow
from securechat.wire import Code, WireError

REGISTRATION_POLICIES = ("open", "token", "closed")


def public_identity(sign_der: bytes, enc_der: bytes, enc_signature: bytes) -> PublicIdentity:
    """Parse keys sent by a client, as a wire error if they are unusable."""
    try:
        return PublicIdentity.from_wire(sign_der, enc_der, enc_signature)
    except IdentityError as error:
        raise WireError(Code.BAD_KEY, str(error)) from None


class AccountRegistry:
    """Every account, by id, by folded nick and by fingerprint."""

    def __init__(self, users: list[UserRow], policy: str,
                 fingerprints: dict[bytes, int] | None = None):
        """@param fingerprints: every identity key each user ever had, by fingerprint."""
        if policy not in REGISTRATION_POLICIES:
            raise ValueError(f"registration policy must be one of {REGISTRATION_POLICIES}")
        self.policy = policy
        self._by_id: dict[int, UserRow] = {}
        self._by_nick: dict[str, UserRow] = {}
        self._fingerprints: set[bytes] = set()
        # Current and past keys: a room's log names members by the key they had.
        self._key_owners: dict[bytes, int] = dict(fingerprints or {})
        self._reserved: set[str] = set()
        self._identities: dict[int, PublicIdentity] = {}
        for user in users:
            self.add(user)

    def __len__(self) -> int:
        return len(self._by_id)

    def by_id(self, user_id: int) -> UserRow:
        return self._by_id[user_id]

    def get(self, user_id: int) -> UserRow | None:
        return self._by_id.get(user_id)

    def find(self, nick: str) -> UserRow | None:
        return self._by_nick.get(fold(nick))

    def require(self, nick: str) -> UserRow:
        user = self.find(nick)
        if user is None:
            raise WireError(Code.NO_SUCH_USER, f"no user {nick}")
        return user

    def identity(self, user: UserRow) -> PublicIdentity:
        """The user's parsed public identity (cached; keys were checked at registration)."""
        if user.id not in self._identities:
            self._identities[user.id] = PublicIdentity.from_wire(
                user.sign_key, user.enc_key, user.enc_signature
            )
        return self._identities[user.id]

    def check_registration(self, nick: str, identity: PublicIdentity,
                           token: str | None) -> bytes | None:
        """Refuse a registration this server must not accept; reserve the nick.

        @return: the digest of the registration token to consume, if any.
        """
        check_nick(nick)
        if self.policy == "closed":
            raise WireError(Code.REGISTRATION_CLOSED, "this server does not accept new accounts")
        digest = None
        if self.policy == "token":
            if not token:
                raise WireError(
                    Code.BAD_REGISTRATION_TOKEN,
                    "this server registers by invitation: ask the operator for a token",
                )
            digest = token_digest(token)
        if fold(nick) in self._by_nick or fold(nick) in self._reserved:
            raise WireError(Code.NICK_TAKEN, f"the nick {nick} is taken")
        if identity.fingerprint in self._fingerprints:
            raise WireError(Code.KEY_IN_USE, "this identity key already has an account")
        self._reserved.add(fold(nick))
        return digest

    def reserve_reset(self, user: UserRow, identity: PublicIdentity) -> None:
        """Hold C{user}'s nick while their reset commits; refuse a key already in use."""
        if fold(user.nick) in self._reserved:
            raise WireError(Code.NICK_TAKEN, f"{user.nick} is being registered right now")
        if identity.fingerprint in self._fingerprints:
            raise WireError(Code.KEY_IN_USE, "this identity key already has an account")
        self._reserved.add(fold(user.nick))

    def replace(self, user: UserRow) -> None:
        """The same account with new keys (an operator's reset)."""
        old = self._by_id[user.id]
        self._fingerprints.discard(old.fingerprint)
        self._identities.pop(user.id, None)
        self.add(user)

    def release(self, nick: str) -> None:
        """Give up a reservation whose registration did not commit."""
        self._reserved.discard(fold(nick))

    def add(self, user: UserRow) -> None:
        self._reserved.discard(fold(user.nick))
        self._by_id[user.id] = user
        self._by_nick[fold(user.nick)] = user
        self._fingerprints.add(user.fingerprint)
        self._key_owners[user.fingerprint] = user.id

    def by_fingerprint(self, fingerprint: bytes) -> UserRow | None:
        """The user who has, or had, the identity key with this fingerprint."""
        user_id = self._key_owners.get(fingerprint)
        return self._by_id.get(user_id) if user_id is not None else None

    def remove(self, user_id: int) -> UserRow | None:
        """An account the operator deleted; @return: it, if it was here."""
        user = self._by_id.pop(user_id, None)
        if user is not None:
            self._by_nick.pop(fold(user.nick), None)
            self._fingerprints.discard(user.fingerprint)
            self._identities.pop(user_id, None)
            self._key_owners = {fp: u for fp, u in self._key_owners.items() if u != user_id}
        return user

    def ids(self) -> set[int]:
        return set(self._by_id)

    def check_login(self, nick: str, signature: bytes, server: str, nonce: bytes,
                    exporter: bytes) -> UserRow:
        """The account a login signature proves, or AUTH_FAILED / ACCOUNT_BANNED."""
        user = self.find(nick)
        if user is None or not verify_login(
            self.identity(user), signature, server, user.nick, nonce, exporter
        ):
            raise WireError(Code.AUTH_FAILED, "login signature does not verify for that nick")
        if user.banned:
            raise WireError(Code.ACCOUNT_BANNED, "this account is banned from the server")
        return user
