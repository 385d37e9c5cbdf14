"""The one rule for names a user gives: labels, people, uploaded photos' names.

A name is stored in the index, printed in tables, put into HTML pages and JSON, and (for
uploads) used as a folder name. So it must be visible (not empty once stripped), bounded, and
free of control and format characters: a newline splits a table row, an ESC starts a terminal
escape sequence (``ESC]8;;URL`` is a hyperlink the user did not write), a bidi override
(category Cf) reorders what is shown.
"""

from __future__ import annotations

import re
import unicodedata

from facesearch.core.errors import DataError

MAX_NAME = 200  # characters: a full name with titles fits; a pasted paragraph does not
_HIDDEN = ("Cc", "Cf")  # control (NUL..US, DEL, C1 incl. CSI/OSC) and format (bidi overrides, zero-width)
# Whole terminal sequences, so their payload (an OSC-8 link's URL, a colour's digits) goes too:
# OSC ... BEL/ST, CSI ... final byte, and any other ESC + one character.
_SEQUENCE = re.compile(r"(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
                       r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?|\x1b.?", re.DOTALL)


def check_name(name: object, what: str = "name") -> str:
    """``name`` stripped of surrounding white space, or :class:`DataError` with a hint saying why not."""
    if not isinstance(name, str):
        raise DataError(f"a {what} must be text, got {type(name).__name__}", hint=f"send the {what} as a string")
    if any(unicodedata.category(c) == "Cs" for c in name):  # undecodable argv bytes, a JSON "\ud800"
        raise DataError(f"the {what} is not valid text (it holds undecodable bytes or a lone surrogate)",
                        hint=f"give the {what} as UTF-8 text")
    clean = name.strip()
    if not clean:
        raise DataError(f"an empty {what} is not usable", hint=f"give a {what} of 1-{MAX_NAME} visible characters")
    if len(clean) > MAX_NAME:
        raise DataError(f"a {what} of {len(clean)} characters is too long",
                        hint=f"give a {what} of 1-{MAX_NAME} characters")
    bad = hidden_characters(clean)
    if bad:
        raise DataError(f"{clean[:40]!r} is not a usable {what}: it holds {', '.join(bad[:3])}",
                        hint="no control characters (newlines, tabs, terminal escapes) or invisible format marks")
    return clean


def hidden_characters(text: str) -> list[str]:
    """The control/format characters in ``text`` as ``U+001B`` strings, in order, each once."""
    seen = dict.fromkeys(f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in _HIDDEN)
    return list(seen)


def strip_hidden(text: str, keep: str = "") -> str:
    """``text`` without terminal escape sequences or control/format characters (but those in ``keep``,
    e.g. a newline): what is left is safe to print on a terminal as it is."""
    if text.isprintable():  # the common case, and cheap
        return text
    text = _SEQUENCE.sub("", text)
    return "".join(c for c in text if c in keep or unicodedata.category(c) not in _HIDDEN)
