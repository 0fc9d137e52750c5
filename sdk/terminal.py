"""Terminal-safe text: what came from a bundle, a server or a wallet is printed literally.

Untrusted text reaches a terminal through rich, which interprets markup
(`[bold green]PROVEN[/]`) and emoji codes (`:warning:`), and through the
terminal itself, which obeys control characters (ESC sequences move the
cursor, recolour or retitle the window; CR and BS overwrite what was printed;
bidi overrides reorder what the eye reads). `safe` removes the control
characters and escapes the markup; `plain_console` gives a rich Console that
does not turn emoji codes or numbers into something else.
"""

from __future__ import annotations

import unicodedata
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape

#: Unicode categories never printed: controls (Cc: ESC, CR, BS, DEL, newlines, C1),
#: format characters (Cf: bidi overrides and isolates - Trojan Source, CVE-2021-42574 -,
#: zero-width and invisible characters, soft hyphen, tag characters that hide text),
#: line and paragraph separators (Zl, Zp: a terminal may break the line there) and
#: surrogates (Cs).
_NEVER_PRINTED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def strip_controls(text: str) -> str:
    """`text` without the characters of `_NEVER_PRINTED` categories (controls, format
    characters such as bidi overrides and zero-width or tag characters, line and
    paragraph separators). Each removed character becomes U+FFFD so the reader sees
    something was there."""
    return "".join("\ufffd" if unicodedata.category(ch) in _NEVER_PRINTED else ch for ch in text)


def safe(value: Any) -> str:
    """`value` (any object; str() is taken) as rich markup that prints literally:
    control characters replaced by U+FFFD, `[` escaped. Use for every string that
    came from outside (bundle, server answer, file) before it is put in markup."""
    return escape(strip_controls(str(value)))


def plain_console(file: TextIO | None = None, *, stderr: bool = False) -> Console:
    """A rich Console without emoji-code substitution or automatic highlighting.
    It writes to `file`, else to the current sys.stdout / sys.stderr at print time
    (so test runners that swap the streams capture it)."""
    if file is not None:
        return Console(file=file, emoji=False, highlight=False)
    return Console(stderr=stderr, emoji=False, highlight=False)


__all__ = ["plain_console", "safe", "strip_controls"]
