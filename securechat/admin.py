# -*- test-case-name: tests.test_admin -*-
"""``securechat-admin``: operator commands on a daemon's data dir.

It works on the data dir of a stopped or a running daemon (SQLite lets one
writer in at a time and the daemon's connection waits its turn). Every error
is one line on stderr with exit code 2.
"""

import argparse
import os
import sqlite3
import sys
import time
from contextlib import closing

from cryptography import x509

from securechat.config import ConfigError, build_settings
from securechat.crypto.certificates import certificate_fingerprint, format_fingerprint
from securechat.server.backends import DATABASE_FILE
from securechat.server.passwords import new_registration_token, token_digest
from securechat.server.sqlite_store import InlineRunner, SQLiteStore, create_private_file
from securechat.server.tls import SELF_SIGNED_CERT


class AdminError(Exception):
    """Reported as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="securechat-admin",
                                     description="Operator commands for a securechat daemon.")
    parser.add_argument("--config", help="the daemon's TOML config (to find its data dir)")
    parser.add_argument("--data-dir", help="the daemon's data dir (overrides --config)")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="registration tokens")
    token_commands = token.add_subparsers(dest="action", required=True)
    create = token_commands.add_parser("create", help="create one-time registration tokens")
    create.add_argument("--count", type=int, default=1, help="how many (default 1)")
    commands.add_parser("fingerprint", help="the server certificate's SHA-256 fingerprint")
    commands.add_parser("users", help="list accounts")
    user = commands.add_parser("user", help="act on one account")
    user_commands = user.add_subparsers(dest="action", required=True)
    for action, text in (("reset", "a one-time token with which a user who lost their keys "
                                   "registers the same nick with new ones"),
                         ("ban", "refuse the account's logins and end its sessions"),
                         ("unban", "let a banned account log in again")):
        user_commands.add_parser(action, help=text).add_argument("nick")
    prune = commands.add_parser(
        "prune", help="delete accounts that never joined a room, created some days ago")
    prune.add_argument("--idle-days", type=int, default=30, metavar="DAYS",
                       help="only accounts at least this old (default %(default)s)")
    prune.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    commands.add_parser("rooms", help="list rooms")
    backup = commands.add_parser("backup", help="copy the database, consistently, while it runs")
    backup.add_argument("destination", help="file to write (must not exist)")
    commands.add_parser("check", help="check the configuration and the database's integrity")
    return parser


def _settings(options):
    try:
        return build_settings(options.config, {"data-dir": options.data_dir})
    except ConfigError as error:
        raise AdminError(str(error)) from None


def _database_path(settings) -> str:
    if settings.postgres:
        raise AdminError("this daemon keeps its data in PostgreSQL; securechat-admin manages "
                         "SQLite databases only: use psql (docs/deploy.md, section 9)")
    path = settings.database or os.path.join(settings.data_dir, DATABASE_FILE)
    if not os.path.exists(path):
        raise AdminError(f"no database at {path}: start the daemon once, or pass the "
                         f"right --data-dir or --config")
    return path


def _store(settings) -> SQLiteStore:
    store = SQLiteStore(InlineRunner(_database_path(settings)))
    store.load()
    return store


def token_create(options, out) -> None:
    if not 1 <= options.count <= 1000:
        raise AdminError("--count takes 1 to 1000")
    store = _store(_settings(options))
    try:
        for _ in range(options.count):
            token = new_registration_token()
            store.add_registration_token(token_digest(token), time.time())
            out.write(token + "\n")
    finally:
        store.close()


def _find_user(db: sqlite3.Connection, nick: str) -> tuple[int, str, bool]:
    row = db.execute("SELECT id, nick, banned FROM users WHERE folded = ?",
                     (nick.casefold(),)).fetchone()
    if row is None:
        raise AdminError(f"no user {nick}; `securechat-admin users` lists them")
    return row[0], row[1], bool(row[2])


def user(options, out) -> None:
    with closing(_database(options)) as db:
        user_id, nick, banned = _find_user(db, options.nick)
        if options.action == "reset":
            token = new_registration_token()
            with db:
                db.execute("INSERT INTO registration_tokens (digest, created, resets)"
                           " VALUES (?, ?, ?)", (token_digest(token), time.time(), user_id))
            out.write(f"{token}\n")
            out.write(f"# {nick} registers again with new keys, once, from a new --home:\n"
                      f"#   securechat-client --home NEW_HOME --nick {nick} --token {token} ...\n"
                      f"# Their rooms then need a new key, and peers see an identity change.\n")
            return
        want = options.action == "ban"
        if banned != want:
            with db:
                db.execute("UPDATE users SET banned = ? WHERE id = ?", (int(want), user_id))
        out.write(f"{nick} is {'banned' if want else 'no longer banned'}; a running daemon "
                  f"applies it within seconds\n")


def prune(options, out) -> None:
    """Accounts nobody used: created, never in a room. A running daemon ends their
    sessions within seconds (it notices the change as it notices a ban)."""
    if options.idle_days < 1:
        raise AdminError("--idle-days takes 1 or more")
    before = time.time() - options.idle_days * 86400
    if options.dry_run:
        with closing(_database(options)) as db:
            nicks = [r[0] for r in db.execute(
                "SELECT nick FROM users WHERE joined_any = 0 AND created < ? ORDER BY folded",
                (before,))]
    else:
        store = _store(_settings(options))
        try:
            d = store.prune_idle_users(before)
            nicks = []
            d.addCallback(nicks.extend)
        finally:
            store.close()
    for nick in nicks:
        out.write(f"{nick}\n")
    out.write(f"# {len(nicks)} account{'s' if len(nicks) != 1 else ''} never in a room and "
              f"{options.idle_days}+ days old {'would be' if options.dry_run else 'were'} "
              f"deleted\n")


def fingerprint(options, out) -> None:
    settings = _settings(options)
    path = settings.tls_cert or os.path.join(settings.data_dir, SELF_SIGNED_CERT)
    try:
        with open(path, "rb") as f:
            certificate = x509.load_pem_x509_certificates(f.read())[0]
    except OSError as error:
        raise AdminError(f"{path}: {error.strerror}") from None
    except ValueError:
        raise AdminError(f"{path}: not a PEM certificate") from None
    out.write(f"sha256 Fingerprint={format_fingerprint(certificate_fingerprint(certificate))}\n")


def _database(options) -> sqlite3.Connection:
    """A connection to the daemon's database (after any pending migration); it waits
    out the daemon's transactions rather than failing on them."""
    settings = _settings(options)
    _store(settings).close()
    connection = sqlite3.connect(_database_path(settings))
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def users(options, out) -> None:
    with closing(_database(options)) as db:
        rows = db.execute("SELECT nick, fingerprint, banned, created FROM users ORDER BY folded")
        for nick, fp, banned, created in rows:
            when = time.strftime("%Y-%m-%d", time.gmtime(created))
            out.write(f"{nick}\t{format_fingerprint(fp)}\t{'banned' if banned else 'active'}"
                      f"\t{when}\n")


def rooms(options, out) -> None:
    with closing(_database(options)) as db:
        rows = db.execute(
            "SELECT name, invite_only, (SELECT COUNT(*) FROM members m WHERE m.room_id = r.id),"
            " (SELECT COALESCE(MAX(epoch), 0) FROM epochs e WHERE e.room_id = r.id),"
            " (SELECT COUNT(*) FROM messages g WHERE g.room_id = r.id)"
            " FROM rooms r ORDER BY folded")
        for name, invite_only, members, epoch, messages in rows:
            out.write(f"{name}\t{'invite-only' if invite_only else 'open'}\t{members} members"
                      f"\tepoch {epoch}\t{messages} messages\n")


def backup(options, out) -> None:
    if os.path.exists(options.destination):
        raise AdminError(f"{options.destination} exists; choose a new file")
    with closing(_database(options)) as db:
        try:
            create_private_file(options.destination)
            with closing(sqlite3.connect(options.destination)) as target:
                db.backup(target)
        except (OSError, sqlite3.Error) as error:
            raise AdminError(f"backup to {options.destination} failed: {error}") from None
    out.write(f"backed up to {options.destination}\n")


def check(options, out) -> None:
    settings = _settings(options)
    with closing(_database(options)) as db:
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise AdminError(f"database integrity check failed: {result}")
    out.write(f"configuration ok; database {_database_path(settings)} ok\n")


def main(argv=None, out=sys.stdout, err=sys.stderr) -> int:
    options = build_parser().parse_args(argv)
    command = {"token": token_create, "fingerprint": fingerprint, "users": users, "user": user,
               "rooms": rooms, "backup": backup, "check": check, "prune": prune}[options.command]
    try:
        command(options, out)
    except AdminError as error:
        err.write(f"securechat-admin: {error}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
