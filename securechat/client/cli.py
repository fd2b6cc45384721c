"""``securechat-client``: options, the passphrase, the identity, and then
either the batch runner or (on a terminal) the console UI.

On a terminal the first run is guided: a nick, the passphrase twice, and
the server's certificate fingerprint shown for the user to confirm (trust
on first use) unless --trust-fingerprint or --ca-file settles it.

Every problem the user can fix is one line on stderr naming it and the fix,
with exit code 2; never a traceback.
"""

import argparse
import getpass
import hashlib
import os
import socket
import ssl
import sys

from securechat.client.home import Home, HomeInUse, default_home
from securechat.config import DEFAULT_PORT
from securechat.constants import FIRST_CONTACT_TIMEOUT_SECONDS
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
        description="End-to-end encrypted chat client. On a terminal it opens the console "
                    "(F1 for keys); with --batch it reads commands such as /join #room from "
                    "standard input and plain lines are messages.",
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
    """Open (or, on first run, create) the identity in --home, which this
    process holds from here on (one client per home)."""
    home = Home(options.home)
    try:
        home.lock("--batch" if options.batch else "console")
    except HomeInUse as error:
        raise UsageProblem(str(error)) from None
    except OSError as error:
        raise UsageProblem(f"--home {home.path}: {error.strerror}") from None
    if not home.exists():
        if not options.nick and interactive(options):
            print(f"No identity in {home.path} yet: let's create one.")
            options.nick = ask("your nick: ")
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


def ask(prompt: str) -> str:
    """A question on the terminal (not input(): readline may send it to stderr)."""
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.strip()


def interactive(options) -> bool:
    return not options.batch and sys.stdin.isatty() and sys.stdout.isatty()


def fetch_fingerprint(host: str, port: int) -> bytes:
    """The SHA-256 of the certificate the server presents, unverified: the user
    is about to judge it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), FIRST_CONTACT_TIMEOUT_SECONDS) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                return hashlib.sha256(tls.getpeercert(binary_form=True)).digest()
    except (OSError, ssl.SSLError) as error:
        raise UsageProblem(f"cannot reach {host}:{port} to see its certificate ({error}); "
                           f"is the daemon running?") from None


def confirm_first_contact(host: str, port: int, server: dict) -> None:
    """Trust on first use: show the fingerprint and pin it only if the user agrees."""
    fingerprint = format_fingerprint(fetch_fingerprint(host, port))
    print(f"First contact with {server['address']}. Its certificate's SHA-256 fingerprint:\n"
          f"  {fingerprint}\n"
          f"Compare it with what the operator sees (securechat-admin fingerprint).")
    if ask("Trust this server? [y/N] ").lower() not in ("y", "yes"):
        raise UsageProblem("server not trusted; nothing was pinned")
    server["fingerprint"] = fingerprint


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
        if not options.batch and not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UsageProblem("the console needs a terminal; for scripts use --batch")
        home, identity, keys, state = unlock(options)
        host, port, server = choose_server(options, state)
        if not server.get("fingerprint") and not options.ca_file and interactive(options):
            confirm_first_contact(host, port, server)
        trust = trust_for(host, server, options)
        if options.batch:
            from securechat.client.run import run_batch

            return run_batch(options, home, identity, keys, state, host, port, server, trust)
        from securechat.console.app import ConsoleConfigError, run_console

        try:
            return run_console(options, home, identity, keys, state, host, port, server, trust)
        except ConsoleConfigError as error:
            raise UsageProblem(str(error)) from None
    except UsageProblem as problem:
        print(f"securechat-client: {problem}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        print("\nsecurechat-client: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
