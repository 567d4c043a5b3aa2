from pathlib import Path

from torch_lsp.config import load_for_path, merge


def test_defaults():
    settings = merge().settings
    assert settings.debounce_ms == 250
    assert settings.execution.enabled and settings.execution.device == "meta" and settings.execution.timeout == 5
    assert settings.inlay_hints.enabled
    assert settings.rules.select == ["TL"]


def test_precedence_later_layers_win_key_by_key():
    merged = merge(("pyproject", {"debounce-ms": 100, "execution": {"device": "cpu", "timeout": 9}}),
                   ("initializationOptions", {"execution": {"timeout": 2}}),
                   ("workspace/configuration", {"debounceMs": 50}))
    assert merged.settings.debounce_ms == 50
    assert merged.settings.execution.device == "cpu"
    assert merged.settings.execution.timeout == 2
    assert merged.warnings == []


def test_invalid_values_fall_back_with_a_warning_naming_key_value_and_fallback():
    merged = merge(("pyproject", {"execution": {"timeout": 9}}),
                   ("workspace/configuration", {"execution": {"timeout": "soon", "device": "tpu"}, "bogus": 1}))
    assert merged.settings.execution.timeout == 9  # the lower layer's value
    assert merged.settings.execution.device == "meta"  # the default
    text = "\n".join(merged.warnings)
    assert "'execution.timeout' = 'soon'" in text and "using 9" in text
    assert "'execution.device' = 'tpu'" in text and "using 'meta'" in text
    assert "unknown setting 'bogus'" in text


def test_non_object_layer_is_ignored():
    merged = merge(("initializationOptions", ["not", "a", "dict"]))
    assert merged.settings.debounce_ms == 250 and "must be an object" in merged.warnings[0]


def test_pyproject_table(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-lsp]\nrules = { ignore = ["TL101"] }\ndebounce-ms = 10\n')
    (tmp_path / "pkg").mkdir()
    merged = load_for_path(tmp_path / "pkg" / "train.py")
    assert merged.settings.rules.ignore == ["TL101"] and merged.settings.debounce_ms == 10


def test_broken_pyproject_is_reported_not_fatal(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.torch-lsp\n")
    merged = load_for_path(tmp_path / "a.py")
    assert merged.settings.debounce_ms == 250 and "cannot read" in merged.warnings[0]
