"""The files that may run a document's classes, from their text (analysis/nearby.py): what they
find, and that the index of those files chooses the driver the whole workspace's index does."""

from __future__ import annotations

from pathlib import Path

import pytest

from torch_lsp.analysis.drivers import choose_driver, choose_driver_alone
from torch_lsp.analysis.nearby import defined_names, possible_runners
from torch_lsp.analysis.workspace import WorkspaceIndex, python_files

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = ROOT / "fixtures" / "projects"

MODEL = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n\n\ndef build():\n    return Net()\n"


def write(root: Path, files: dict[str, str]) -> dict[str, str]:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return {str((root / name).resolve()): text for name, text in files.items()}


def found(root: Path, texts: dict[str, str], document: str) -> set[str]:
    result = possible_runners(str((root / document).resolve()), texts)
    return {str(Path(path).relative_to(root.resolve())) for path in result} if result is not None else None


def test_defined_names_are_the_top_level_classes_and_functions():
    assert defined_names(MODEL + "    def inner(self):\n        pass\nasync def run():\n    pass\n") == {"Net", "build", "run"}


def test_importers_through_factories_wrappers_packages_and_star_imports(tmp_path):
    texts = write(tmp_path, {
        "model.py": MODEL,
        "factory.py": "from model import build\n\ndef make():\n    return build()\n",
        "train.py": "import factory\nnet = factory.make()\nnet(1)\n",
        "wrapper.py": "import torch.nn as nn\nfrom model import Net\n\nclass Wrapped(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.net = Net()\n",
        "run_wrapped.py": "from wrapper import Wrapped\nWrapped()(1)\n",
        "pkg/__init__.py": "from model import *\n",
        "uses_pkg.py": "from pkg import Net\nNet()(1)\n",
        # Names the class but imports it from nowhere the search knows: another project's Net.
        "other.py": "from torchvision.models import Net\nNet()\n",
        # Imports the module but none of its names.
        "unrelated.py": "import model\nprint(model.__file__)\n",
    })
    assert found(tmp_path, texts, "model.py") == {
        "model.py", "factory.py", "train.py", "wrapper.py", "run_wrapped.py", "pkg/__init__.py", "uses_pkg.py"}


def test_the_documents_own_imports_are_kept_for_its_bases(tmp_path):
    texts = write(tmp_path, {
        "layers/base.py": "import torch.nn as nn\n\nclass Base(nn.Module):\n    pass\n",
        "layers/__init__.py": "",
        "layers/net.py": "from .base import Base\n\nclass Net(Base):\n    def forward(self, x):\n        return x\n",
        "train.py": "from layers.net import Net\nNet()(1)\n",
    })
    assert found(tmp_path, texts, "layers/net.py") == {"layers/net.py", "layers/base.py", "train.py"}


def test_names_found_in_too_many_files_give_up(tmp_path):
    files = {"model.py": MODEL}
    files.update({f"script_{n}.py": "from model import Net\nNet()(1)\n" for n in range(12)})
    texts = write(tmp_path, files)
    document = str((tmp_path / "model.py").resolve())
    assert possible_runners(document, texts, max_files=10) is None
    assert len(possible_runners(document, texts, max_files=13)) == 13


def _texts(root: Path) -> dict[str, str]:
    return {str(Path(path).resolve()): Path(path).read_text(encoding="utf-8", errors="replace")
            for path in python_files(str(root))}


@pytest.mark.parametrize("project", sorted(p.name for p in PROJECTS.iterdir() if p.is_dir()))
def test_the_files_found_choose_the_whole_indexs_driver(project):
    """Every module file of the fixture projects whose driver needs more than itself: the index
    of the files found chooses what the whole workspace's index chooses."""
    root = PROJECTS / project
    texts = _texts(root)
    whole = WorkspaceIndex(root)
    whole.scan()
    compared = 0
    for document in sorted(whole.files):
        if not whole.classes_in(document):
            continue
        alone = WorkspaceIndex(root)
        alone.update(document, texts[document])
        if choose_driver_alone(alone, document) is not None:
            continue
        files = possible_runners(document, texts)
        assert files is not None
        nearby = WorkspaceIndex(root)
        for path in files:
            nearby.update(path, texts[path])
        assert choose_driver(nearby, document) == choose_driver(whole, document), document
        compared += 1
    if project in ("model_train", "relative_pkg", "src_layout", "trainer_class"):
        assert compared  # these projects have model files run from elsewhere


def test_the_bases_of_the_documents_bases_are_found_when_a_runner_imports_them_too(tmp_path):
    """`detection/mask.py` builds on `faster.py`'s class, itself on `general.py`'s; the package's
    `__init__.py` runs nothing but imports both (so `faster.py` is found through it first): the
    bases' files are all kept, `general.py` too."""
    texts = write(tmp_path, {
        "detection/__init__.py": "from .faster import *\nfrom .mask import *\n",
        "detection/general.py": "import torch.nn as nn\n\nclass General(nn.Module):\n    pass\n",
        "detection/faster.py": "from .general import General\n\nclass Faster(General):\n    pass\n",
        "detection/mask.py": "from .faster import Faster\n\nclass Mask(Faster):\n    pass\n",
    })
    assert found(tmp_path, texts, "detection/mask.py") == {
        "detection/mask.py", "detection/faster.py", "detection/general.py", "detection/__init__.py"}
