"""Showing text that came from outside (file names, file contents) without letting it act.

A bottom-layer utility (imports nothing from ``vop``). A file may be named
``x\\x1b]0;PWNED\\x07.mp4``: printed raw, the escape sequence retitles the terminal; and
POSIX file names are bytes, so a latin-1 ``caf\\xe9.mp4`` reaches Python as the lone
surrogate ``'\\udce9'`` (``surrogateescape``), which a strict UTF-8 stream cannot encode.

:func:`escape` makes any such string printable and unambiguous:

* C0 controls (U+0000-U+001F), DEL (U+007F) and C1 controls (U+0080-U+009F) become
  ``\\xNN`` (tab, newline and carriage return too: a name is one line);
* an undecodable byte (a surrogate U+DC80-U+DCFF) becomes ``\\xNN`` of the original byte;
  any other lone surrogate becomes ``\\uXXXX``;
* a backslash becomes ``\\\\``, so the escaped form cannot be confused with a name that
  really contains ``\\x1b``.

Everything else (letters of every script, emoji) is kept as it is. The result encodes
in UTF-8 strictly and is also safe inside JSON.
"""

from __future__ import annotations

import re

__all__ = ["escape", "has_controls", "format_header", "CONTROL_CHARS"]

# C0, DEL, C1: the characters a terminal may act on.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\\ud800-\udfff]")


def _one(match: re.Match) -> str:
    c = match.group()
    if c == "\\":
        return "\\\\"
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code >= 0xD800:
        return f"\\u{code:04x}"
    return f"\\x{code:02x}"


def escape(text: object) -> str:
    """``text`` (``str(text)`` for paths and the like) with control characters, undecodable
    bytes and backslashes escaped; see the module docstring."""
    return _UNSAFE.sub(_one, str(text))


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a C0/C1 control character or DEL."""
    return CONTROL_CHARS.search(text) is not None


def format_header(title: str, rows: list[tuple[str, object]]) -> str:
    """A run header: ``title`` then one aligned ``name: value`` line per row, values
    escaped (they hold paths and file names)."""
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join([title, *(f"  {name + ':':<{width + 1}} {escape(value)}" for name, value in rows)])
