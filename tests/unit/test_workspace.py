"""The workspace index, driver choice and package context (pure: no torch, no server)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from torch_lsp.analysis.drivers import RunSpec, choose_driver, choose_driver_alone
from torch_lsp.analysis.project import package_context, workspace_root
from torch_lsp.analysis.workspace import ClassRef, ScanLimits, WorkspaceIndex

PROJECTS = FIXTURES / "projects"


def copy_project(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(PROJECTS / name, target)
    return target


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def indexed(root: Path) -> WorkspaceIndex:
    index = WorkspaceIndex(root)
    index.scan()
    return index


def names(refs) -> set[str]:
    return {r.qualname for r in refs}


# -- package context and roots -----------------------------------------------------------------


def test_root_is_the_nearest_project_marker(tmp_path):
    project = write(tmp_path / "proj", {"pyproject.toml": "", "pkg/__init__.py": "", "pkg/sub/__init__.py": "",
                                        "pkg/sub/mod.py": ""})
    assert workspace_root(project / "pkg/sub/mod.py") == project.resolve()


def test_root_without_markers_is_the_top_of_the_package_chain(tmp_path):
    project = copy_project("relative_pkg", tmp_path)
    assert workspace_root(project / "visionpkg/model.py") == project.resolve()


def test_root_of_a_lone_script_is_its_folder(tmp_path):
    project = copy_project("model_train", tmp_path)
    assert workspace_root(project / "train.py") == project.resolve()


def test_a_package_module_runs_with_its_package_context(tmp_path):
    project = copy_project("relative_pkg", tmp_path)
    context = package_context(project / "visionpkg/train.py")
    assert context.module == "visionpkg.train"
    assert context.package == "visionpkg"
    assert context.package_root == str(project.resolve())
    assert context.roots[:2] == (str(project.resolve()), str((project / "visionpkg").resolve()))


def test_src_layout_puts_src_on_the_path(tmp_path):
    project = copy_project("src_layout", tmp_path)
    context = package_context(project / "scripts/fit.py")
    assert context.module is None
    assert str((project / "src").resolve()) in context.roots
    assert context.roots[0] == str((project / "scripts").resolve())


def test_package_init_is_the_package_itself(tmp_path):
    project = copy_project("relative_pkg", tmp_path)
    context = package_context(project / "visionpkg/__init__.py")
    assert (context.module, context.package) == ("visionpkg", "visionpkg")


# -- index ---------------------------------------------------------------------------------------


def test_index_finds_module_classes_through_workspace_inheritance(tmp_path):
    root = write(tmp_path, {
        "base.py": """
            from torch import nn
            class Base(nn.Module):
                pass
        """,
        "models/__init__.py": "",
        "models/deep.py": """
            from base import Base as B
            class Deep(B):
                def forward(self, x):
                    return x
            class NotAModule:
                pass
        """})
    index = indexed(root)
    assert names(index.module_classes()) == {"base.Base", "models.deep.Deep"}


def test_relative_imports_and_package_reexports_resolve(tmp_path):
    project = copy_project("relative_pkg", tmp_path)
    index = indexed(project)
    train = str((project / "visionpkg/train.py").resolve())
    assert index.resolve("visionpkg.TinyConvNet", train) == ClassRef(
        str((project / "visionpkg/model.py").resolve()), "visionpkg.model.TinyConvNet")
    uses = index.live_uses(train)
    assert {(u.cls.name, u.line + 1) for u in uses} == {("ConvBlock", 11), ("TinyConvNet", 12)}
    # TinyConvNet builds ConvBlock in __init__: running it runs ConvBlock.
    assert names(index.reach(index.resolve("visionpkg.TinyConvNet", train))) == {
        "visionpkg.model.TinyConvNet", "visionpkg.layers.ConvBlock"}


def test_uses_follow_wrappers_factories_and_functions_that_call_their_argument(tmp_path):
    root = write(tmp_path, {
        "net.py": """
            import torch.nn as nn
            class Net(nn.Module):
                def forward(self, x):
                    return x
            class Head(nn.Module):
                def forward(self, x):
                    return x
            def build(cfg):
                net = Net()
                return net, Head()
        """,
        "engine.py": """
            def train_one_epoch(model, loader):
                for batch in loader:
                    out = model(batch)
        """,
        "main.py": """
            import torch
            from torch.nn.parallel import DistributedDataParallel as DDP
            from net import build
            from engine import train_one_epoch

            def main():
                model, head = build(None)
                model = DDP(model.to("cuda"))
                train_one_epoch(model, [torch.zeros(1)])
                head(torch.zeros(1))

            def never_called():
                other, _ = build(None)
                other(torch.zeros(1))

            if __name__ == "__main__":
                main()
        """})
    index = indexed(root)
    uses = index.live_uses(root / "main.py")
    assert {(u.cls.name, u.line + 1, u.via) for u in uses} == {("Net", 10, "argument"), ("Head", 11, "call")}
    everything = index.uses_in(root / "main.py")
    assert ("Net", 15) in {(u.cls.name, u.line + 1) for u in everything}  # seen, but never runs


def test_models_handed_to_a_constructor_run_with_it(tmp_path):
    root = write(tmp_path, {
        "parts.py": """
            import torch.nn as nn
            class Backbone(nn.Module):
                pass
            class Block(nn.Module):
                pass
            class Detector(nn.Module):
                def __init__(self, backbone, block_class):
                    super().__init__()
                    self.backbone = backbone
                    self.block = block_class()
        """,
        "run.py": """
            import torch
            from parts import Backbone, Block, Detector
            backbone = Backbone()
            detector = Detector(backbone, Block)
            detector(torch.zeros(1))
        """})
    index = indexed(root)
    classes = {u.cls.name for u in index.live_uses(root / "run.py")}
    assert classes == {"Backbone", "Block", "Detector"}


def test_models_handed_to_a_plain_class_that_calls_them(tmp_path):
    root = write(tmp_path, {
        "nets.py": """
            import torch.nn as nn
            class Net(nn.Module):
                def forward(self, x):
                    return x
            class Head(nn.Module):
                def forward(self, x):
                    return x
            class Tail(nn.Module):
                def forward(self, x):
                    return x
        """,
        "loops.py": """
            class Trainer:
                def __init__(self, model, lr=0.1, head=None):
                    self.model = model.to("cpu")
                    self.head = head
                def fit(self, batch):
                    return self.head(self.model(batch))
            class Logger:
                def __init__(self, model):
                    self.model = model  # kept, never called
        """,
        "main.py": """
            import torch
            from nets import Net, Head, Tail
            from loops import Trainer, Logger
            def main():
                tail = Tail()
                trainer = Trainer(Net(), head=Head())
                Logger(tail)
                trainer.fit(torch.zeros(1))
            main()
        """})
    index = indexed(root)
    uses = index.live_uses(root / "main.py")
    assert {(u.cls.name, u.line + 1, u.via) for u in uses} == {("Net", 7, "argument"), ("Head", 7, "argument")}
    spec = choose_driver(index, root / "nets.py")
    assert Path(spec.driver).name == "main.py" and spec.unreached == ("nets.Tail",)
    # The trainer's method is edited to call nothing: main.py no longer runs the models.
    index.update(root / "loops.py", (root / "loops.py").read_text().replace("self.head(self.model(batch))", "batch"))
    assert index.live_uses(root / "main.py") == []


def test_update_replaces_one_files_facts(tmp_path):
    project = copy_project("model_train", tmp_path)
    index = indexed(project)
    model = str((project / "model.py").resolve())
    assert choose_driver(index, model).driver.endswith("train.py")
    train = project / "train.py"
    index.update(train, train.read_text().replace("outputs = net(images)", "outputs = None"))
    spec = choose_driver(index, model)
    assert spec.call_sites[0].line + 1 == 32  # test_outputs = net(...) is the only call left
    index.update(train, "import torch\n")
    assert choose_driver(index, model).runs_itself
    index.remove(train)
    assert not index.contains(train)


def test_scan_skips_virtual_environments_hidden_folders_and_huge_files(tmp_path):
    root = write(tmp_path, {
        "ok.py": "x = 1\n",
        ".hidden/a.py": "x = 1\n",
        "node_modules/b.py": "x = 1\n",
        "myenv/pyvenv.cfg": "",
        "myenv/lib/c.py": "x = 1\n",
        "lib/site-packages/d.py": "x = 1\n",
        "big.py": "x = 1\n" * 1000,
    })
    index = WorkspaceIndex(root, ScanLimits(max_files=100, max_file_bytes=1000))
    result = index.scan()
    assert sorted(Path(p).name for p in index.files) == ["ok.py"]
    assert result.skipped_large == 1 and not result.truncated


def test_scan_stops_at_the_file_cap(tmp_path):
    root = write(tmp_path, {f"m{i}.py": "x = 1\n" for i in range(10)})
    index = WorkspaceIndex(root, ScanLimits(max_files=4))
    result = index.scan()
    assert result.files == 4 and result.truncated


def test_the_early_search_sees_the_files_the_scan_indexes_near_the_cap(tmp_path):
    # Files over the size limit do not count toward the cap, for the scan and for the search of
    # a document's runners before the scan (shapes/session.py) alike.
    from torch_lsp.shapes.session import _WorkspaceTexts

    root = write(tmp_path, {"a_big.py": "x = 1\n" * 1000, "b_big.py": "x = 1\n" * 1000,
                            **{f"m{i}.py": "x = 1\n" for i in range(5)}})
    index = WorkspaceIndex(root, ScanLimits(max_files=3, max_file_bytes=1000))
    searched = set(_WorkspaceTexts(index, {}))
    result = index.scan()
    assert searched == set(index.files) and len(searched) == 3
    assert result.skipped_large == 2 and result.truncated


def test_broken_files_are_indexed_as_errors_not_crashes(tmp_path):
    root = write(tmp_path, {"broken.py": "class Net(nn.Module:\n", "bin.py": "x = 1\n"})
    index = indexed(root)
    index.update(root / "bin.py", "\x00\x01")
    assert index.files[str((root / "broken.py").resolve())].error
    assert not index.contains(root / "bin.py")
    assert choose_driver(index, root / "broken.py").runs_itself


# -- driver choice -------------------------------------------------------------------------------


def test_model_file_is_driven_by_the_training_script(tmp_path):
    project = copy_project("model_train", tmp_path)
    index = indexed(project)
    spec = choose_driver(index, project / "model.py")
    assert Path(spec.driver).name == "train.py"
    assert spec.reached == ("model.Net",) and spec.unreached == ()
    assert [(s.line + 1, s.via) for s in spec.call_sites] == [(25, "call"), (32, "call")]
    assert spec.loads_data
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_a_document_that_runs_its_own_classes_is_its_own_driver(tmp_path):
    project = copy_project("model_train", tmp_path)
    write(project, {"model.py": (project / "model.py").read_text() + textwrap.dedent("""
        if __name__ == "__main__":
            print(Net()(torch.randn(2, 3, 32, 32)).shape)
    """)})
    spec = choose_driver(indexed(project), project / "model.py")
    assert spec.runs_itself and spec.reached == ("model.Net",)


def test_a_file_that_starts_running_a_class_with_the_same_names_becomes_its_driver(tmp_path):
    """An edit that keeps a file's names updates only that file's entry in the index of which
    files run which classes (`runners_of`): the driver choice follows it both ways."""
    project = write(tmp_path, {
        "model.py": """
            import torch.nn as nn
            class Net(nn.Module):
                def forward(self, x):
                    return x
        """,
        "train.py": "from model import Net\n",
    })
    index = indexed(project)
    model, train = str(project / "model.py"), str(project / "train.py")
    assert choose_driver(index, model).runs_itself and index.runners_of(set(index.classes_in(model))) == set()
    assert index.update(train, "from model import Net\n\nNet()(1)\n") is False  # the same names
    assert index.runners_of(set(index.classes_in(model))) == {train}
    assert choose_driver(index, model).driver == train
    assert index.update(train, "from model import Net\n") is False
    assert choose_driver(index, model).runs_itself and index.runners_of(set(index.classes_in(model))) == set()


@pytest.mark.parametrize("project", ["model_train", "relative_pkg", "src_layout", "ddp_script", "trainer_class",
                                     "synth_zoo"])
def test_the_drivers_ranked_are_every_file_that_reaches_a_class(project, tmp_path):
    """Ranking only `runners_of` chooses what ranking every file of the workspace chooses."""
    from torch_lsp.analysis.drivers import _candidate, _rank

    root = copy_project(project, tmp_path)
    index = indexed(root)
    documents = [path for path in index.files if index.classes_in(path)]
    assert documents
    for document in documents:
        classes = set(index.classes_in(document))
        everyone = [c for c in (_candidate(index, path, classes) for path in index.files)
                    if c is not None and (c.reached or c.path == document)]
        best = min(everyone, key=lambda c: _rank(c, document))
        assert index.runners_of(classes) == {c.path for c in everyone if c.reached}
        assert choose_driver(index, document).driver == (best.path if best.reached else document)


def alone(root: Path, document: Path) -> WorkspaceIndex:
    """An index holding `document` alone, as a job has it before the first scan ends."""
    index = WorkspaceIndex(root)
    index.update(document, document.read_text())
    return index


def test_a_driver_chosen_from_the_document_alone_is_the_one_the_workspace_chooses(tmp_path):
    """Wherever the document alone decides (a script, or a file that runs every module class it
    defines), the whole workspace's index chooses the same: the document, reaching the same
    classes. Checked on every file of every fixture project."""
    decided, undecided = 0, 0
    for project in sorted(p.name for p in PROJECTS.iterdir() if p.is_dir()):
        root = copy_project(project, tmp_path)
        index = indexed(root)
        for document in sorted(index.files):
            early = choose_driver_alone(alone(root, Path(document)), document)
            if early is None:
                undecided += 1
                continue
            decided += 1
            full = choose_driver(index, document)
            assert (early.driver, early.reached, early.unreached, early.module, early.roots) == \
                (full.driver, full.reached, full.unreached, full.module, full.roots), document
            assert set(early.call_sites) <= set(full.call_sites)
    assert decided >= 10 and undecided >= 10, (decided, undecided)


def test_the_document_alone_does_not_decide_where_other_files_could_change_the_choice(tmp_path):
    root = write(tmp_path, {
        "base.py": """
            import torch.nn as nn
            class Base(nn.Module):
                pass
        """,
        # Net is a module only through base.py: alone it looks like a plain class, and the
        # document like a script that runs no module at all; train.py is its driver.
        "model.py": """
            import torch
            from base import Base
            class Net(Base):
                def forward(self, x):
                    return x
            class Plain(object):
                pass
        """,
        "train.py": """
            import torch
            from model import Net
            Net()(torch.zeros(2))
        """,
        # Names a star import may bring could be workspace classes too.
        "starred.py": """
            from base import *
            class Net(Base):
                pass
            Net()
        """,
        # The standard library's, builtins' and the document's own bases decide alone.
        "alone.py": """
            import enum
            import torch
            import torch.nn as nn
            class Kind(enum.Enum):
                A = 1
            class Block(nn.Module):
                def forward(self, x):
                    return x
            class Deeper(Block):
                pass
            class Error(ValueError):
                pass
            Deeper()(torch.zeros(2))
        """,
        "script.py": """
            import torch
            print(torch.zeros(2))
        """,
    })
    index = indexed(root)
    model, starred = root / "model.py", root / "starred.py"
    assert choose_driver(index, model).driver == str((root / "train.py").resolve())
    assert choose_driver_alone(alone(root, model), model) is None
    assert choose_driver_alone(alone(root, starred), starred) is None
    for name in ("alone.py", "script.py"):
        document = root / name
        early = choose_driver_alone(alone(root, document), document)
        assert early is not None and early == choose_driver(index, document)
    # In torch's own repository, `torch.*` names workspace files: a base there may be a module.
    (root / "torch" / "nn").mkdir(parents=True)
    (root / "torch" / "__init__.py").write_text("")
    assert choose_driver_alone(alone(root, root / "alone.py"), root / "alone.py") is not None  # torch.nn.Module
    subclass = "import torch\nclass Quantized(torch.ao.Linear):\n    pass\nQuantized()\n"
    (root / "quantized.py").write_text(subclass)
    assert choose_driver_alone(alone(root, root / "quantized.py"), root / "quantized.py") is None
    shutil.rmtree(root / "torch")
    assert choose_driver_alone(alone(root, root / "quantized.py"), root / "quantized.py") is not None
    # A module class the document defines but does not run: its driver may be elsewhere.
    (root / "alone.py").write_text((root / "alone.py").read_text().replace("Deeper()(torch.zeros(2))", ""))
    assert choose_driver_alone(alone(root, root / "alone.py"), root / "alone.py") is None


def test_an_open_buffers_statements_are_kept_between_versions_and_go_with_the_disks_text(tmp_path):
    project = copy_project("model_train", tmp_path)
    index = indexed(project)
    model = str(project / "model.py")
    text = (project / "model.py").read_text()
    for version in range(3):  # typing into the open buffer
        assert index.update(model, text + f"\nvalue = {version}\n", buffer=True) is False
    fresh = WorkspaceIndex(project)
    fresh.update(model, text + "\nvalue = 2\n")
    assert index.files[model] == fresh.files[model]
    assert model in index._parts  # what the next version reuses
    index.update(model, text)  # closed: the disk's text, which will not be typed into
    assert model not in index._parts
    index.update(model, text + "\n", buffer=True)
    index.remove(model)
    assert model not in index._parts


def test_the_shortest_driver_without_data_wins(tmp_path):
    project = copy_project("model_train", tmp_path)
    write(project, {"smoke.py": """
        import torch
        from model import Net
        net = Net()
        out = net(torch.randn(2, 3, 32, 32))
    """})
    spec = choose_driver(indexed(project), project / "model.py")
    assert Path(spec.driver).name == "smoke.py" and not spec.loads_data


def test_package_driver_runs_as_a_module(tmp_path):
    project = copy_project("relative_pkg", tmp_path)
    spec = choose_driver(indexed(project), project / "visionpkg/layers.py")
    assert Path(spec.driver).name == "train.py"
    assert spec.module == "visionpkg.train" and spec.package == "visionpkg"
    assert spec.roots[0] == str(project.resolve())
    assert spec.call_sites[0].line + 1 == 11


def test_src_layout_driver_is_found_from_the_model(tmp_path):
    project = copy_project("src_layout", tmp_path)
    spec = choose_driver(indexed(project), project / "src/tabular/models/mlp.py")
    assert Path(spec.driver).name == "fit.py"
    assert (Path(spec.call_sites[0].path).name, spec.call_sites[0].line + 1) == ("fit.py", 11)
    assert str((project / "src").resolve()) in spec.roots


def test_classes_nobody_runs_are_left_for_synthesized_calls(tmp_path):
    root = write(tmp_path, {"zoo.py": """
        import torch.nn as nn
        class A(nn.Module):
            def forward(self, x):
                return x
        class B(nn.Module):
            def forward(self, x):
                return x
    """, "use_a.py": """
        import torch
        from zoo import A
        A()(torch.zeros(1))
    """})
    spec = choose_driver(indexed(root), root / "zoo.py")
    assert Path(spec.driver).name == "use_a.py"
    assert spec.reached == ("zoo.A",) and spec.unreached == ("zoo.B",)
    assert spec.call_sites[0].via == "direct"


@pytest.mark.parametrize("project", ["relative_pkg", "src_layout", "model_train", "required_args", "ddp_script",
                                     "saved_tensors", "trainer_class"])
def test_every_fixture_project_indexes_cleanly(project, tmp_path):
    index = indexed(copy_project(project, tmp_path))
    assert all(f.error is None for f in index.files.values())
    assert index.module_classes()


def test_constructions_and_calls_of_a_class_across_files(tmp_path):
    project = copy_project("model_train", tmp_path)
    write(project, {"eval.py": """
        import torch
        from model import Net
        probe = Net(num_classes=100)
        print(Net(7)(torch.zeros(1, 3, 32, 32)).shape)
    """})
    index = indexed(project)
    net = index.classes_in(project / "model.py")[0]
    built = [(Path(c.path).name, c.line + 1, c.arguments) for c in index.constructions_of(net)]
    assert built == [("eval.py", 4, "num_classes=100"), ("eval.py", 5, "7"), ("train.py", 17, "")]
    assert [(Path(u.path).name, u.line + 1) for u in index.calls_of(net)] == [
        ("eval.py", 5), ("train.py", 25), ("train.py", 32)]
