"""Line moves: where an older text's lines are in a newer one, composed over many edits, and a
shape report moved with them (analysis/line_moves.py, shapes/moved.py)."""

from __future__ import annotations

import random

from torch_lsp.analysis.line_moves import LineMap
from torch_lsp.shapes.moved import moved_report
from torch_lsp.shapes.report import ExpressionShapes, Range, ShapeError, ShapeReport, Value, VariableShapes

OLD = ["def forward(self, x):", "    x = self.conv(x)", "    x = x.flatten(1)", "    return self.fc(x)"]
TENSOR = [Value("tensor", (8, 6), "float32")]


def test_an_inserted_line_moves_the_lines_below_and_keeps_the_ones_above():
    new = OLD[:1] + ["    # a comment"] + OLD[1:]
    moves = LineMap.between(OLD, new)
    assert [moves.line(i) for i in range(4)] == [0, 2, 3, 4]


def test_an_edited_line_is_nowhere_and_enter_at_the_end_of_a_line_edits_none():
    edited = LineMap.between(OLD, [OLD[0], "    x = self.conv2(x)", *OLD[2:]])
    assert [edited.line(i) for i in range(4)] == [0, None, 2, 3]
    enter = LineMap.between(OLD, OLD[:2] + ["    "] + OLD[2:])
    assert [enter.line(i) for i in range(4)] == [0, 1, 3, 4]


def test_composed_moves_keep_every_line_that_no_edit_touched_and_only_those():
    rng = random.Random(7)
    for _ in range(200):
        original = [f"line {i}" for i in range(rng.randrange(0, 12))]
        text, composed, touched = list(original), LineMap.identity(len(original)), set()
        origin = list(range(len(original)))  # which original line each current line is, if any
        for _ in range(rng.randrange(1, 6)):
            new, new_origin = list(text), list(origin)
            at = rng.randrange(len(text) + 1)
            kind = rng.choice(["insert", "delete", "edit"]) if text else "insert"
            if kind == "insert":
                new.insert(at, f"new {rng.random()}")
                new_origin.insert(at, None)
            elif at < len(text):
                touched.add(origin[at])
                if kind == "delete":
                    del new[at], new_origin[at]
                else:
                    new[at], new_origin[at] = f"edited {rng.random()}", None
            composed = composed.then(LineMap.between(text, new))
            text, origin = new, new_origin
        for old_line in range(len(original)):
            now = composed.line(old_line)
            if old_line in touched:
                assert now is None
            else:
                assert now is not None and origin[now] == old_line and text[now] == original[old_line]


def test_a_report_moves_with_its_lines_and_drops_what_was_on_edited_ones():
    report = ShapeReport(path="m.py", variables=[VariableShapes("x", 1, 1, TENSOR), VariableShapes("x", 2, 2, TENSOR)],
                         expressions=[ExpressionShapes(Range(1, 8, 1, 20), TENSOR), ExpressionShapes(Range(1, 4, 3, 5), TENSOR)],
                         errors=[ShapeError("TL201", "bad", Range(3, 11, 3, 22))])
    inserted = OLD[:1] + ["    # note", "    # note"] + OLD[1:]  # two edits: two lines added above,
    new = inserted[:4] + ["    x = x.flatten(2)"] + inserted[5:]  # then a line edited
    moved = moved_report(report, LineMap.between(OLD, inserted).then(LineMap.between(inserted, new)))
    assert [(v.line, v.end_line) for v in moved.variables] == [(3, 3)]  # line 2 was edited
    assert [e.range for e in moved.expressions] == [Range(3, 8, 3, 20)]  # the 3-line one spans the edit
    assert [e.range for e in moved.errors] == [Range(5, 11, 5, 22)]
