"""Text for a terminal: what a candidate, an LLM or a caller wrote, made inert.

A terminal obeys the bytes it is sent: ESC starts CSI/OSC sequences (OSC 52 writes the
clipboard, others retitle the window, move the cursor or hide text), the C1 byte \\x9b is a
one-byte CSI on many terminals, \\r and backspace overwrite what was shown, and bidi overrides
reorder it (Trojan Source). `safe(text)` shows each such character as a Python-style escape
(`\\x1b`, `\\x9b`, `\\u202e`), so the text stays readable and nothing in it acts. Inside a
Python string literal the escape means the same character, so printed code keeps its meaning.
"""
from __future__ import annotations

import logging
import re
from typing import Any

# C0 controls (tab and newline are kept where allowed), DEL, C1 controls, bidi marks, overrides
# and isolates, the line/paragraph separators, and lone surrogates (unencodable text).
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff"
_MULTILINE = re.compile(f"[{_CONTROL}]")
_ONE_LINE = re.compile(f"[{_CONTROL}\t\n]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: Any, *, one_line: bool = False) -> str:
    """`str(value)` with every terminal control character escaped; newlines and tabs are kept
    unless `one_line` (a name or a table cell must not start a forged row)."""
    return (_ONE_LINE if one_line else _MULTILINE).sub(_escape, str(value))


class SafeFormatter(logging.Formatter):
    """Log lines can carry a candidate's error message or an LLM's reply: escaped too."""

    def format(self, record: logging.LogRecord) -> str:
        return safe(super().format(record))
