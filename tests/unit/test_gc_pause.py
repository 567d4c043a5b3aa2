"""The cyclic GC is paused while analysis runs (analysis/syntax.py `without_cyclic_gc`), and
the survivors skip the young generations: garbage cycles left by earlier analyses must still
be collected, or a server that analyses on every keystroke grows without end."""

import gc
import weakref

from torch_lsp.analysis import syntax


class _Node:
    pass


def _analysis_leaving_a_cycle(size: int) -> weakref.ref:
    """What an analysis leaves behind: a cycle (tree <-> facts) holding many objects."""
    tree, facts = _Node(), _Node()
    tree.facts, facts.tree = facts, tree
    tree.nodes = [_Node() for _ in range(size)]
    return weakref.ref(tree)


def test_garbage_cycles_of_earlier_analyses_are_collected_without_an_explicit_collection(monkeypatch):
    monkeypatch.setattr(syntax, "_tracked_after_full_collection", None)  # counted from now on
    monkeypatch.setattr(syntax, "_promoted_since_full_collection", 0)
    assert gc.isenabled()
    size = 5_000
    rounds = len(gc.get_objects()) // 2 // size + 5  # garbage: half as much as this process holds alive
    left = []
    for _ in range(rounds):
        with syntax.without_cyclic_gc():
            left.append(_analysis_leaving_a_cycle(size))
    assert gc.isenabled()
    assert any(ref() is None for ref in left)  # collected along the way, as the interpreter would


def test_results_freed_by_reference_counting_cost_no_full_collection(monkeypatch):
    """Each analysis's results survive it and are freed when the next one replaces them: what
    was promoted never stays. A full collection then finds nothing and holds the interpreter
    lock for the whole heap's scan (the server's hovers waited behind one every few seconds
    while 30 documents were typed into)."""
    monkeypatch.setattr(syntax, "_tracked_after_full_collection", None)
    monkeypatch.setattr(syntax, "_promoted_since_full_collection", 0)
    full = []

    def note(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(info["collected"])

    size = 5_000
    rounds = len(gc.get_objects()) // size + 5  # promoted: more than the whole heap, 4 x the threshold
    gc.callbacks.append(note)
    try:
        for _ in range(rounds):
            with syntax.without_cyclic_gc():
                analysed = [_Node() for _ in range(size)]
            result = analysed  # stored once the analysis is done; the last one's is freed then
    finally:
        gc.callbacks.remove(note)
    assert result and full == []


def test_a_frozen_heap_stays_frozen():
    """The shape worker freezes its warm heap before forking jobs; planning a module in a job
    must not hand that heap back to the collector."""
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with syntax.without_cyclic_gc():
            _Node()
        assert gc.get_freeze_count() >= frozen and gc.isenabled()
    finally:
        gc.unfreeze()


def test_overlapping_analyses_keep_the_collector_paused_until_the_last_one_ends():
    """Analyses run in several threads and overlap in any order; the pause is counted, so the
    collector is off while any runs and on once none does. (Each thread reading `isenabled()`
    and switching the collector itself once left it off for good: every later cycle leaked.)"""
    for order in (("a", "b"), ("b", "a")):
        first, second = syntax.without_cyclic_gc(), syntax.without_cyclic_gc()
        pauses = {"a": first, "b": second}
        first.__enter__()
        second.__enter__()
        pauses[order[0]].__exit__(None, None, None)
        assert not gc.isenabled()  # one is still running
        pauses[order[1]].__exit__(None, None, None)
        assert gc.isenabled()


def test_resuming_the_collector_never_lists_every_object(monkeypatch):
    """`gc.get_objects()` holds a reference to every object for a moment, also to a tuple that
    another thread is still building; CPython's `_PyTuple_Resize` then raises "SystemError: bad
    argument to internal function" in that thread (a code action's libcst import died that
    way in the server). The full-collection rule counts objects without listing them."""
    def listing(*args, **kwargs):
        raise AssertionError("gc.get_objects() called while other threads run")

    monkeypatch.setattr(syntax, "_tracked_after_full_collection", None)
    monkeypatch.setattr(syntax, "_promoted_since_full_collection", 0)
    monkeypatch.setattr(gc, "get_objects", listing)
    left = []
    for _ in range(40):  # enough promoted objects to pass the full-collection threshold
        with syntax.without_cyclic_gc():
            left.append(_analysis_leaving_a_cycle(20_000))
    assert syntax._tracked_after_full_collection is not None
    assert any(ref() is None for ref in left)  # the full collection ran and freed old cycles
