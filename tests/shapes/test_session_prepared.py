"""A large document's shape plan and probe hints made from its static analysis's own parse
(`ShapeSession.prepare`, which the server calls in the analysis's worker thread, while that
parse is valid): a job of the same text parses nothing, and gets what a fresh parse gives."""

from __future__ import annotations

import shutil

from tests.conftest import FIXTURES
from torch_lsp.analysis import syntax
from torch_lsp.analysis.incremental import IncrementalAnalyzer
from torch_lsp.config import Settings
from torch_lsp.shapes.session import RunRequest, ShapeSession, probes_for

HELPERS = "".join(f"\n\ndef helper_{i}(x):\n    y = x * {i}\n    return y + 1\n" for i in range(60))


def _versions(text: str) -> list[str]:
    """The text, a comment typed in Net's forward, a new line in a helper (lines below move)."""
    typed = text.replace("        x = self.pool(F.relu(self.conv1(x)))",
                         "        x = self.pool(F.relu(self.conv1(x)))  # typed")
    entered = typed.replace("    y = x * 7\n", "    y = x * 7\n    z = y - 1\n")
    assert text != typed != entered
    return [text, typed, entered]


def test_a_prepared_version_is_planned_and_probed_without_a_parse(tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    path = root / "seed.py"
    shutil.copy(FIXTURES / "cifar10_seed.py", path)
    path.write_text(path.read_text() + HELPERS)
    settings = Settings()
    session, fresh = ShapeSession(root, lambda: settings), ShapeSession(root, lambda: settings)
    analyzer = IncrementalAnalyzer(str(path))
    parses: list[int] = []
    parse_private = syntax.parse_private
    for number, text in enumerate(_versions(path.read_text())):
        analysis = analyzer.analyze(text)
        assert analysis.ok and analyzer.last_was_incremental == (number > 0)
        session.prepare(str(path), text, analysis.parsed)
        request = RunRequest(path=str(path), text=text)
        monkeypatch.setattr(syntax, "parse_private", lambda source: parses.append(len(source)) or parse_private(source))
        spec = session.job_spec(request)
        probes = probes_for(str(path), text, settings, root, session._prepared_for(request).hints)
        monkeypatch.setattr(syntax, "parse_private", parse_private)
        assert parses == []
        expected = fresh.job_spec(request)  # parses the text
        assert spec.main == expected.main and spec.main.source != text  # the training loop runs once
        assert probes == probes_for(str(path), text, settings, root) and [p.class_name for p in probes] == ["Net"]
    # A text no analysis saw (typed since), or other stated inputs: planned from a parse.
    assert session._prepared_for(RunRequest(path=str(path), text=text + "\n# typed\n")) is None
    settings.shapes.inputs = {"Net": {"x": [2, 3, 32, 32]}}
    assert session._prepared_for(RunRequest(path=str(path), text=text)) is None
