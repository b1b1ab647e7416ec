"""Code blocks of an answer as HTML with syntax colours (Pygments), for the message view.

Plain Python, tested without Qt. The language is the fence's word (```python); an unknown or
missing one is shown uncoloured: guessing from the text is slow and often wrong. Token colours
only (no background), from a light or a dark style to suit the theme.
"""

from __future__ import annotations

import functools
import html

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

LIGHT_STYLE, DARK_STYLE = "default", "native"
PRE = '<pre style="margin:0; white-space:pre-wrap">{}</pre>'


@functools.lru_cache(maxsize=64)
def _lexer(lang: str) -> Lexer | None:
    try:
        return get_lexer_by_name(lang.lower(), stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


@functools.lru_cache(maxsize=2)
def _formatter(dark: bool) -> HtmlFormatter:
    return HtmlFormatter(nowrap=True, noclasses=True, style=DARK_STYLE if dark else LIGHT_STYLE)


def code_html(code: str, lang: str, dark: bool = False) -> str | None:
    """``code`` coloured for the fence's language ``lang``; None when it has no lexer."""
    lexer = _lexer(lang) if lang else None
    if lexer is None:
        return None
    return PRE.format(highlight(code, lexer, _formatter(dark)).rstrip("\n"))


def plain_html(code: str) -> str:
    return PRE.format(html.escape(code))
