"""The foundation fixtures (issue 2, item 7) are real programs: each runs on CPU and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs each model fixture for real on CPU

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PROGRAMS = ["mnist_mlp.py", "resnet_block.py", "transformer_encoder.py"]


@pytest.mark.parametrize("name", PROGRAMS)
def test_foundation_fixture_runs_on_cpu(name: str, tmp_path: Path):
    # A scratch cwd proves the program writes nothing next to itself and downloads nothing.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(FIXTURES / name)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "the program reports its progress"
    assert list(tmp_path.iterdir()) == []
