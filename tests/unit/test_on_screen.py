"""Which documents the editor shows, from the requests it makes for them (server/on_screen.py)."""

from __future__ import annotations

from torch_lsp.server.on_screen import OnScreen


def test_a_document_asked_for_recently_is_on_screen_until_it_has_not_been_for_a_while():
    now = [100.0]
    screen = OnScreen(clock=lambda: now[0], keep_s=10.0)
    assert not screen.shows("file:///a.py")
    screen.asked("file:///a.py")
    now[0] += 9.0
    assert screen.shows("file:///a.py") and not screen.shows("file:///b.py")
    now[0] += 2.0
    assert not screen.shows("file:///a.py")  # nothing asked for 11 s: scrolled away, or another tab
    screen.asked("file:///a.py")
    assert screen.shows("file:///a.py")
    screen.closed("file:///a.py")
    assert not screen.shows("file:///a.py")


def test_documents_asked_for_long_ago_are_forgotten():
    now = [0.0]
    screen = OnScreen(clock=lambda: now[0], keep_s=10.0)
    for number in range(300):
        screen.asked(f"file:///{number}.py")
        now[0] += 1.0
    assert len(screen._asked) <= 257  # bounded: only the last keep_s of them, once past 256
    assert screen.shows("file:///299.py") and not screen.shows("file:///0.py")
