"""Contract text in Markdown: the one escaper every Markdown output uses (the exported report, the
Prefect report artifact). Contract text and file names are hostile input."""

from __future__ import annotations

import re

# Every character CommonMark or GFM gives a meaning inside a line: emphasis and strikethrough
# (* _ ~), code (`), links and images ([ ] !), table cells (|), headings (#), raw HTML (< >) and
# entities (&). Backslash first so the escapes added for the others are not themselves escaped.
_SPECIAL = re.compile(r"([\\|*_`<>\[\]&#!~])")
_WHITESPACE = re.compile(r"\s+")


def md_inline(text: object) -> str:
    """``text`` as inert Markdown on one line: whitespace runs (newlines too) become one space, so
    nothing can start a heading, a list or a table row, and every markup character is
    backslash-escaped, so it reads back as exactly the text. ``None`` and "" give ""."""
    if text is None:
        return ""
    return _SPECIAL.sub(r"\\\1", _WHITESPACE.sub(" ", str(text)).strip())
