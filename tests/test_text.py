"""Terminal-safe text (mvcompile.support.text): control characters shown as escapes, markup kept literal."""
from __future__ import annotations

from rich.console import Console

from mvcompile.support.text import literal, visible


def test_visible_escapes_controls_and_invisible_marks() -> None:
    assert visible("clear\x1b[2Jscreen") == "clear\\x1b[2Jscreen"
    assert visible("a\0b\x7fc\u202ed\u200b") == "a\\x00b\\x7fc\\u202ed\\u200b"
    assert visible("line1\nline2\tx", keep="\n") == "line1\nline2\\x09x"
    assert visible("naïve 日本 [bold]") == "naïve 日本 [bold]"


def test_literal_prints_markup_and_escapes_as_text() -> None:
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    for label in ("[/bold]", "[bold red]x[/]", "\x1b[2J\x1b[31mred", "[link=http://evil]y[/link]"):
        console.print(f"label {literal(label)} end", highlight=False)
    text = console.export_text()
    assert "label [/bold] end" in text and "label [bold red]x[/] end" in text
    assert "label \\x1b[2J\\x1b[31mred end" in text and "label [link=http://evil]y[/link] end" in text
    assert "\x1b[2J" not in console.export_text(styles=True)
