"""A driver's report keeps the last batch-dimension names until its own naming run says
(batch_dims.LastNames): the naming run is a background job that waits while other documents'
drivers wait, so without this the shapes shown while typing lost `B` at every version."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import FIXTURES
from torch_lsp.config import Settings
from torch_lsp.shapes.session import RunRequest, ShapeSession

FIRST_LAYER = "        x = self.pool(F.relu(self.conv1(x)))"
LAST_LAYER = "        x = self.fc3(x)"

pytestmark = pytest.mark.slow  # a real shape worker


def cpu_dims(source: str) -> dict[str, tuple]:
    """The seed's Net run for real on CPU at two batch sizes: each layer's shape, a dimension
    that follows the batch as `B` (the loader's `batch_size=32` is a literal)."""
    import torch
    import torch.nn.functional as F

    namespace: dict = {}
    exec(compile(source.split("\ntransform = ")[0], "seed", "exec"), namespace)
    net = namespace["Net"]()
    runs = []
    for batch in (32, 5):
        x = torch.randn(batch, 3, 32, 32)
        runs.append({"first": tuple(net.pool(F.relu(net.conv1(x))).shape), "last": tuple(net(x).shape)})
    return {key: tuple("B" if (a, b) == (32, 5) else a for a, b in zip(runs[0][key], runs[1][key])) for key in runs[0]}


def shown(report, text: str, needle: str) -> tuple:
    """The value of `x` after the line holding `needle`, as the editor shows it."""
    line = next(i for i, source in enumerate(text.splitlines()) if needle in source)
    [value] = next(v for v in report.variables if v.name == "x" and v.line == line).values
    return tuple(name or size for name, size in zip(value.dims or (None,) * len(value.shape), value.shape))


async def test_a_driver_report_shows_the_last_names_where_nothing_they_rest_on_changed(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    path = root / "seed.py"
    shutil.copy(FIXTURES / "cifar10_seed.py", path)
    settings = Settings()
    session = ShapeSession(root, lambda: settings)
    first_reports = []

    async def run(text: str):
        reports = await session.analyse(RunRequest(path=str(path), text=text, key="seed"),
                                        on_driver=lambda first: first_reports.append(first[str(path)]))
        return first_reports[-1], reports[str(path)]

    try:
        original = path.read_text()
        expected = cpu_dims(original)
        assert expected["first"][0] == "B" and expected["last"] == ("B", 10)
        numbers = {key: tuple(32 if d == "B" else d for d in dims) for key, dims in expected.items()}

        # Nothing named before: the driver's report has the numbers, its naming run the names.
        first, final = await run(original)
        assert shown(first, original, FIRST_LAYER) == numbers["first"]
        assert shown(final, original, FIRST_LAYER) == expected["first"]

        # A line added above the model: every value moved down one line keeps its name at once.
        moved = "# a comment typed above\n" + original
        first, final = await run(moved)
        assert shown(first, moved, FIRST_LAYER) == expected["first"] == shown(final, moved, FIRST_LAYER)
        assert shown(first, moved, LAST_LAYER) == expected["last"]

        # conv1 with 8 channels: the first layer's shape changed, its old name is not put on it
        # (the naming run names it); the last layer's is the same shape and keeps its name.
        wider = moved.replace("nn.Conv2d(3, 6, 5)", "nn.Conv2d(3, 8, 5)").replace("nn.Conv2d(6, 16, 5)",
                                                                                  "nn.Conv2d(8, 16, 5)")
        wider_expected = cpu_dims(wider.split("\n", 1)[1])
        assert wider_expected["first"] != expected["first"]
        first, final = await run(wider)
        assert shown(first, wider, FIRST_LAYER) == tuple(32 if d == "B" else d for d in wider_expected["first"])
        assert shown(first, wider, LAST_LAYER) == wider_expected["last"]
        assert shown(final, wider, FIRST_LAYER) == wider_expected["first"]

        # Another batch size: the names rest on the loaders, and none is carried.
        smaller = wider.replace("batch_size=32", "batch_size=16")
        first, final = await run(smaller)
        assert shown(first, smaller, LAST_LAYER) == (16, 10)
        assert shown(final, smaller, LAST_LAYER) == ("B", 10)

        # A closed document's names are forgotten.
        session.cancel("seed")
        first, _ = await run(smaller)
        assert shown(first, smaller, LAST_LAYER) == (16, 10)
    finally:
        await session.close()
