"""``securechat-client``: options, the passphrase, the identity, and then
either the batch runner or (on a terminal) the console UI.

Every problem the user can fix is one line on stderr naming it and the fix,
with exit code 2; never a traceback.
"""

import argparse
import getpass
import os
import sys

from securechat.client.home import Home, default_home
from securechat.config import DEFAULT_PORT
from securechat.crypto.certificates import format_fingerprint, parse_fingerprint
from securechat.crypto.identity import PrivateIdentity
from securechat.crypto.keystore import KeystoreError
from securechat.names import check_nick
from securechat.wire import WireError

PASSPHRASE_ENV = "SECURECHAT_PASSPHRASE"


class UsageProblem(Exception):
    """A problem to report in one line, with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="securechat-client",
        description="End-to-end encrypted chat client. Commands such as /join #room are read "
                    "from standard input with --batch; plain lines are messages.",
    )
    parser.add_argument("--home", default=default_home(),
                        help="where the identity and state live (default: %(default)s)")
    parser.add_argument("--server", help="the daemon, HOST[:PORT] (default port "
                                         f"{DEFAULT_PORT}); remembered after the first run")
    parser.add_argument("--nick", help="on first run, the nick to create and register")
    parser.add_argument("--trust-fingerprint", metavar="HEX",
                        help="the daemon certificate's SHA-256, as openssl prints it or plain hex")
    parser.add_argument("--ca-file", metavar="PEM", help="verify the daemon by this CA instead")
    parser.add_argument("--token", help="registration token, on servers that require one")
    parser.add_argument("--batch", action="store_true",
                        help="read commands from stdin, write JSON events to stdout")
    parser.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                        help="with --batch: keep receiving this long after the input ends")
    parser.add_argument("--connect-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="with --batch: give up after this long without a connection")
    parser.add_argument("--verified-only", action="store_true",
                        help="hand room keys only to members whose safety number you verified")
    return parser


def split_server(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 or text.startswith("[") \
        else (text, "", "")
    host = (host or text).strip("[]")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageProblem(f"--server {text}: the port must be a number from 1 to 65535")
    return host, int(port)


def read_passphrase(home: Home, creating: bool) -> str:
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase:
        return passphrase
    if not sys.stdin.isatty():
        raise UsageProblem(f"no passphrase: set {PASSPHRASE_ENV} or run on a terminal")
    passphrase = getpass.getpass(f"passphrase for {home.path}: ")
    if creating and getpass.getpass("again, to be sure: ") != passphrase:
        raise UsageProblem("the two passphrases differ; nothing was created")
    if not passphrase:
        raise UsageProblem("an empty passphrase would leave your keys unprotected")
    return passphrase


def unlock(options) -> tuple[Home, PrivateIdentity, object, dict]:
    """Open (or, on first run, create) the identity in --home."""
    home = Home(options.home)
    if not home.exists():
        if not options.nick:
            raise UsageProblem(f"no identity in {home.path} yet: pass --nick NICK to create one")
        try:
            check_nick(options.nick)
        except WireError as error:
            raise UsageProblem(f"--nick {options.nick}: {error.text}") from None
        passphrase = read_passphrase(home, creating=True)
        identity = PrivateIdentity.generate()
        keys = home.create(identity, passphrase)
        state = {"nick": options.nick}
        home.save_state(state, keys)
        return home, identity, keys, state
    passphrase = read_passphrase(home, creating=False)
    try:
        identity, keys = home.open(passphrase)
        state = home.load_state(keys)
    except KeystoreError as error:
        raise UsageProblem(f"{home.path}: {error}") from None
    if options.nick and state.get("nick") and options.nick.casefold() != state["nick"].casefold():
        raise UsageProblem(f"{home.path} belongs to {state['nick']}, not {options.nick}; "
                           f"use another --home for another identity")
    return home, identity, keys, state


def choose_server(options, state: dict) -> tuple[str, int, dict]:
    remembered = state.get("server", {})
    address = options.server or remembered.get("address")
    if not address:
        raise UsageProblem("which server? pass --server HOST[:PORT]")
    host, port = split_server(address)
    if remembered.get("address") and remembered["address"] != f"{host}:{port}":
        raise UsageProblem(f"this home is registered with {remembered['address']}; "
                           f"use another --home for {host}:{port}")
    server = {"address": f"{host}:{port}", "fingerprint": remembered.get("fingerprint")}
    if options.trust_fingerprint:
        try:
            server["fingerprint"] = format_fingerprint(parse_fingerprint(options.trust_fingerprint))
        except ValueError as error:
            raise UsageProblem(f"--trust-fingerprint: {error}") from None
    return host, port, server


def trust_for(host: str, server: dict, options):
    from securechat.client.trust import ServerTrust

    if options.ca_file:
        if not os.path.exists(options.ca_file):
            raise UsageProblem(f"--ca-file {options.ca_file}: no such file")
        return ServerTrust(host, ca_file=options.ca_file)
    if server.get("fingerprint"):
        return ServerTrust(host, fingerprint=parse_fingerprint(server["fingerprint"]))
    raise UsageProblem(
        f"first contact with {server['address']}: pass --trust-fingerprint (the daemon logs "
        f"'TLS certificate sha256 Fingerprint=...' at start) or --ca-file"
    )


def main(argv=None) -> int:
    options = build_parser().parse_args(argv)
    try:
        if not options.batch:
            raise UsageProblem("the console UI is not available yet; use --batch")
        home, identity, keys, state = unlock(options)
        host, port, server = choose_server(options, state)
        trust = trust_for(host, server, options)
    except UsageProblem as problem:
        print(f"securechat-client: {problem}", file=sys.stderr)
        return 2
    from securechat.client.run import run_batch

    return run_batch(options, home, identity, keys, state, host, port, server, trust)


if __name__ == "__main__":
    sys.exit(main())
