"""Run a fixture program in-process under ``track_calls()``, on meta or on CPU.

Shared by the explain tests and usable by the engine's tests: it reads the expectation a
broken fixture states in its header (``# expect: TL2xx at line N: <message substring>``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SHAPE_FIXTURES = FIXTURES / "shapes"

_EXPECT = re.compile(r"^# expect: (TL2\d\d) at line (\d+): (.+)$", re.MULTILINE)
_ONLY_ON = re.compile(r"^# expect-only-on: (\w+)", re.MULTILINE)


@dataclass(frozen=True)
class Expectation:
    code: str
    line: int  # 1-based, as an editor shows it
    message: str
    only_on: str | None  # "cpu" when meta cannot see the mistake (it needs data)


def expectation(path: Path) -> Expectation | None:
    text = path.read_text()
    found = _EXPECT.search(text)
    if found is None:
        return None
    only = _ONLY_ON.search(text)
    return Expectation(found[1], int(found[2]), found[3].strip(), only[1] if only else None)


@dataclass
class Run:
    error: BaseException | None
    tracker: object
    globals: dict


def run_fixture(path: Path, device: str) -> Run:
    """Execute ``path`` as ``__main__`` with tensors and modules created on ``device``."""
    import torch

    from torch_lsp.shapes.explain import track_calls

    source = path.read_text()
    code = compile(source, str(path), "exec")
    namespace = {"__name__": "__main__", "__file__": str(path)}
    error = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device(device), track_calls() as tracker:
            try:
                exec(code, namespace)
            except Exception as exc:  # the fixture's own mistake is what we examine
                error = exc
    return Run(error, tracker, namespace)


def shape_fixtures(kind: str) -> list[Path]:
    return sorted(SHAPE_FIXTURES.glob(f"*_{kind}.py"))
