"""Code blocks in answers get syntax colours for their fence's language."""

from __future__ import annotations

from app.ui.chat.highlight import code_html, plain_html


def test_a_known_language_is_coloured_and_its_text_kept() -> None:
    code = "def f(x):\n    return x < 2  # small"
    coloured = code_html(code, "python")
    assert coloured is not None and coloured.startswith("<pre")
    assert "color:" in coloured  # token colours inline
    assert "&lt;" in coloured and "# small" in coloured  # escaped, whole
    assert code_html(code, "Python") is not None  # the fence's word in any case


def test_dark_themes_get_another_style() -> None:
    assert code_html("x = 1", "python", dark=True) != code_html("x = 1", "python", dark=False)


def test_an_unknown_or_missing_language_is_left_plain() -> None:
    assert code_html("anything", "") is None
    assert code_html("anything", "no-such-language") is None
    assert plain_html("a < b") == '<pre style="margin:0; white-space:pre-wrap">a &lt; b</pre>'
