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


def test_each_kind_of_bad_value_gets_its_own_message_and_the_lower_layers_value():
    merged = merge(("pyproject", {"execution": {"memoryMb": 1024}}),
                   ("workspace/configuration", {
                       "rules": {"select": "TL", "severity": {"TL111": "loud"}},
                       "debounceMs": 2.5, "inlayHints": {"enabled": "maybe"}, "training": 5,
                       "execution": {"memoryMb": 10, "timeout": 301, "python": 3},
                       "shapes": {"gpuMemoryGb": 0, "inputs": {"Net": {"x": 3}}, "env": []}}))
    said = {line.split("'")[1]: line for line in merged.warnings}
    expected = {
        "rules.select": "(Input should be a valid list); using ['TL']",
        "rules.severity.TL111": "(Input should be 'error', 'warning', 'info' or 'hint'); using None",
        "debounceMs": "(Input should be a valid integer, got a number with a fractional part); using 250",
        "inlayHints.enabled": "(Input should be a valid boolean, unable to interpret input); using True",
        "training": "(Input should be a valid dictionary or instance of TrainingSettings)",
        "execution.memoryMb": "(Input should be greater than or equal to 256); using 1024",
        "execution.timeout": "(Input should be less than or equal to 300); using 5.0",
        "execution.python": "(Input should be a valid string); using None",
        "shapes.gpuMemoryGb": "(Input should be greater than 0); using None",
        "shapes.inputs.Net.x": "(Input should be a valid string)",
        "shapes.env": "(Input should be a valid dictionary); using {}",
    }
    assert set(said) == set(expected)
    for key, text in expected.items():
        assert text in said[key], said[key]
    settings = merged.settings
    assert settings.execution.memory_mb == 1024 and settings.rules.select == ["TL"] and settings.debounce_ms == 250
    assert settings.shapes.inputs == {"Net": {}} and settings.training.runs_dir == ".torch-lsp/runs"


def test_values_in_other_spellings_are_read_as_the_type_says():
    merged = merge(("initializationOptions", {"execution": {"timeout": "7", "enabled": "no", "memory-mb": "512"},
                                              "inlay_hints": {"enabled": 0}, "shapes": {"gpuMemoryGb": 8},
                                              "rules": {"ignore": ("TL1",)}}))
    assert merged.warnings == []
    settings = merged.settings
    assert settings.execution.timeout == 7.0 and isinstance(settings.execution.timeout, float)
    assert settings.execution.enabled is False and settings.execution.memory_mb == 512
    assert settings.inlay_hints.enabled is False and settings.shapes.gpu_memory_gb == 8.0
    assert settings.rules.ignore == ["TL1"]
    assert settings.to_dict()["execution"] == {"enabled": False, "device": "meta", "timeout": 7.0, "memoryMb": 512,
                                               "synthesize": True, "python": None}


def test_the_server_loads_no_validation_library():
    """Settings are six small sections: pydantic cost the server ~19 MB of its memory."""
    import subprocess
    import sys

    code = "import sys, torch_lsp.server.app; print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pydantic_core'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
