# -*- test-case-name: tests.test_console_text -*-
"""Making text from other people safe to put on a terminal.

Everything shown comes from a sender we do not control: control characters
could move the cursor, rewrite the screen or retitle the window, and bidi
overrides could make a line read differently than it is. Emoji whose width
terminals disagree about (skin tones, flags, VS16) would shift the layout.
"""

import hashlib
import unicodedata

# Shown instead of a control character: visible, one column, never acted on.
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"

# Bidi embeddings, overrides and isolates (Trojan Source, CVE-2021-42574).
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
# Modifiers whose width urwid and terminals count differently.
_WIDTH_TRAPS = set("\ufe0f\u200d") | {chr(c) for c in range(0x1F3FB, 0x1F400)}
_REGIONAL_A = 0x1F1E6
_REGIONAL_Z = 0x1F1FF

# Colours a nick may get; the same nick always gets the same one.
NICK_COLOURS = ("nick0", "nick1", "nick2", "nick3", "nick4", "nick5", "nick6", "nick7")


def _flag(pair: str) -> str:
    return "[" + "".join(chr(ord(c) - _REGIONAL_A + ord("A")) for c in pair) + "]"


def safe_line(text: str) -> str:
    """One line of untrusted text as it may be displayed: no control, bidi or
    width-ambiguous characters; flags as [US]."""
    out = []
    chars = list(text)
    i = 0
    while i < len(chars):
        char = chars[i]
        code = ord(char)
        if _REGIONAL_A <= code <= _REGIONAL_Z:
            if i + 1 < len(chars) and _REGIONAL_A <= ord(chars[i + 1]) <= _REGIONAL_Z:
                out.append(_flag(char + chars[i + 1]))
                i += 2
                continue
            out.append(REPLACEMENT)
        elif char == "\t":
            out.append("    ")
        elif char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
            out.append(REPLACEMENT)
        elif char in _WIDTH_TRAPS:
            pass
        else:
            out.append(char)
        i += 1
    return "".join(out)


def safe_lines(text: str) -> list[str]:
    """Untrusted text that may span lines, one safe line per line."""
    return [safe_line(line) for line in text.replace("\r\n", "\n").split("\n")]


def nick_colour(nick: str) -> str:
    """A stable palette entry per nick (not Python's salted hash)."""
    digest = hashlib.sha256(nick.casefold().encode()).digest()
    return NICK_COLOURS[digest[0] % len(NICK_COLOURS)]
