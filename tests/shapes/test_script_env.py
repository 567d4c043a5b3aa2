"""Real-script blockers (script_env.py, datasets.py, inputs.py), each run like a worker job in a
fork (tests/shapes/fork_runner.py) and checked against real CPU execution of the same model."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.shapes.fork_runner import run_in_fork
from tests.shapes.helpers import variable

PROJECTS = FIXTURES / "projects"


@pytest.fixture(scope="module", autouse=True)
def warm():
    from torch_lsp.shapes.worker import warm_up

    warm_up()


def project(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(PROJECTS / name, target)
    return target


def script(tmp_path: Path, text: str, name: str = "script.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def shape(report, name: str, line: int | None = None) -> tuple:
    return tuple(variable(report, name, None if line is None else line - 1).values[-1].shape)


def notes_of(notes, kind: str) -> list[str]:
    return [n.message for n in notes if n.kind == kind]


def cpu_forward(module_source: str, class_name: str, *args, inputs):
    """Build `class_name(*args)` from `module_source` on CPU and run it on a tensor of each shape."""
    import torch

    namespace: dict = {}
    exec(compile(textwrap.dedent(module_source), "<cpu reference>", "exec"), namespace)
    model = namespace[class_name](*args)
    return [tuple(model(torch.randn(*size)).shape) for size in inputs]


# -- argparse ----------------------------------------------------------------------------------------


def test_required_options_are_filled_in_and_said(tmp_path):
    path = project("required_args", tmp_path) / "train.py"
    report, notes = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    filled = notes_of(notes, "argv")
    assert filled == ["required options were not given; ran with `--data-dir data_dir --features 32 --size small` "
                      "(set `argv` in [tool.torch-lsp.shapes] to choose)"]
    assert [n.line + 1 for n in notes if n.kind == "argv"] == [27]  # parser.parse_args()
    assert shape(report, "scores") == (16, 5)
    # CPU: the same classifier at the filled-in size and at a configured one (two sizes).
    source = path.read_text().split("def parse_args")[0]
    assert cpu_forward(source, "Classifier", 32, 32, 5, inputs=[(16, 32), (3, 32)]) == [(16, 5), (3, 5)]


def test_configured_argv_is_used_as_given(tmp_path):
    path = project("required_args", tmp_path) / "train.py"
    report, notes = run_in_fork(path, argv=("--data-dir", "d", "--features", "12", "--size", "large",
                                            "--batch-size", "4"))
    assert notes_of(notes, "argv") == []
    assert shape(report, "batch") == (4, 12) and shape(report, "scores") == (4, 5)
    source = path.read_text().split("def parse_args")[0]
    assert cpu_forward(source, "Classifier", 12, 256, 5, inputs=[(4, 12), (9, 12)]) == [(4, 5), (9, 5)]


def test_rejected_argv_stops_quietly_with_argparse_message(tmp_path):
    path = project("required_args", tmp_path) / "train.py"
    report, notes = run_in_fork(path, argv=("--size", "medium"))
    assert report.errors == [] and "sys.exit" in (report.stopped or "")
    assert any("invalid choice: 'medium'" in m for m in notes_of(notes, "argv"))


def test_subcommands_and_positionals_are_filled(tmp_path):
    path = script(tmp_path, """
        import argparse
        import torch
        parser = argparse.ArgumentParser()
        parser.add_argument("data")
        sub = parser.add_subparsers(dest="command", required=True)
        fit = sub.add_parser("fit")
        fit.add_argument("--width", type=int, required=True)
        args = parser.parse_args()
        layer = torch.nn.Linear(args.width, 3)
        out = layer(torch.randn(2, args.width))
    """)
    report, notes = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    assert shape(report, "out") == (2, 3)
    assert len(notes_of(notes, "argv")) == 2  # the parser and its sub-parser each said what they filled
    import torch

    layer = torch.nn.Linear(32, 3)  # --width was filled in as 32
    assert [tuple(layer(torch.randn(n, 32)).shape) for n in (2, 6)] == [(2, 3), (6, 3)]


# -- distributed -----------------------------------------------------------------------------------


def test_ddp_script_runs_on_a_fake_process_group_without_errors(tmp_path):
    path = project("ddp_script", tmp_path) / "train_ddp.py"
    report, notes = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    assert any("fake process group" in m for m in notes_of(notes, "distributed"))
    assert any("device_count() answered 2" in m for m in notes_of(notes, "environment"))
    assert shape(report, "predictions") == (32, 1)
    source = path.read_text().split("def main")[0]
    assert cpu_forward(source, "Regressor", inputs=[(32, 10), (7, 10)]) == [(32, 1), (7, 1)]


def test_spawned_workers_and_processes_run_rank_zero_in_process(tmp_path):
    path = script(tmp_path, """
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp
        import torch.nn as nn
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        def worker(rank, world_size):
            dist.init_process_group("gloo", rank=rank, world_size=world_size)
            model = FSDP(nn.Linear(6, 4))
            out = model(torch.randn(5, 6))
            dist.all_reduce(out)

        def hogwild(model):
            hog = model(torch.randn(3, 6))

        if __name__ == "__main__":
            mp.spawn(worker, args=(4,), nprocs=4)
            shared = nn.Linear(6, 2)
            shared.share_memory()
            procs = [mp.Process(target=hogwild, args=(shared,)) for _ in range(3)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
    """)
    report, notes = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    assert shape(report, "out") == (5, 4) and shape(report, "hog") == (3, 2)
    import torch

    assert [tuple(torch.nn.Linear(6, 4)(torch.randn(n, 6)).shape) for n in (5, 2)] == [(5, 4), (2, 4)]
    messages = notes_of(notes, "distributed")
    assert any("rank 0 of 4" in m for m in messages) and any("4 worker processes" in m for m in messages)


def test_storage_calls_are_no_ops_on_meta(tmp_path):
    path = script(tmp_path, """
        import torch
        model = torch.nn.Linear(4, 2)
        model.share_memory()
        x = torch.randn(3, 4).pin_memory().share_memory_()
        y = model(x)
    """)
    report, _ = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    assert shape(report, "y") == (3, 2)


GPU_SCRIPT = """
    import torch
    import torch.nn as nn

    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda:0")
    props = torch.cuda.get_device_properties(0)
    batch_size = 16 if props.total_memory > 40 * 2**30 else 4
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        batch = torch.randn(batch_size, 8).to(device, non_blocking=True)
    torch.cuda.current_stream().wait_stream(stream)
    batch.record_stream(torch.cuda.current_stream())
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.reset_peak_memory_stats()
    start.record()
    logits = model(batch)
    end.record()
    torch.cuda.synchronize()
    took_ms = start.elapsed_time(end)
    free, total = torch.cuda.mem_get_info()
    major, minor = torch.cuda.get_device_capability()
"""


def test_gpu_streams_events_and_queries_have_stand_ins_without_a_gpu(tmp_path):
    path = script(tmp_path, GPU_SCRIPT)
    report, notes = run_in_fork(path)
    assert report.errors == [] and report.stopped is None, report  # not "Found no NVIDIA driver"
    assert shape(report, "batch") == (16, 8)  # the stand-in GPU has 80 GiB: the script's big-GPU branch
    namespace: dict = {}
    exec(compile(textwrap.dedent(GPU_SCRIPT).split("stream = ")[0].replace('"cuda:0"', '"cpu"')
                 .replace("torch.cuda.get_device_properties(0)", "type('P', (), {'total_memory': 80 * 2**30})"),
                 "<cpu reference>", "exec"), namespace)
    import torch

    assert shape(report, "logits") == tuple(namespace["model"](torch.randn(16, 8)).shape)
    assert any("get_device_properties() answered a stand-in GPU (80 GiB" in m for m in notes_of(notes, "environment"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a real GPU answers the call")
def test_a_cuda_call_without_a_stand_in_stops_quietly_not_as_a_shape_error(tmp_path):
    path = script(tmp_path, """
        import torch
        x = torch.randn(2, 3)
        graph = torch.cuda.CUDAGraph()
        y = x * 2
    """)
    report, _ = run_in_fork(path)
    assert report.errors == [], report.errors
    assert report.stopped.startswith("stopped at line 4: it needs a GPU, which shape analysis does not have here")
    assert shape(report, "x") == (2, 3)


# -- datasets -----------------------------------------------------------------------------------------


def test_positional_transform_and_loader_batches_are_honoured(tmp_path):
    path = project("model_train", tmp_path) / "train.py"
    report, notes = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    assert shape(report, "outputs") == (64, 10)
    assert shape(report, "test_outputs") == (1000, 10)  # never the stand-in's length
    assert shape(report, "images", 31) == (1000, 3, 32, 32)
    assert notes_of(notes, "stand-in")[0] == ("CIFAR10 replaced by FakeData (3×32×32, 10 classes, 50,000 samples): "
                                              "nothing was read or downloaded")
    # CPU: the model file itself at both batch sizes.
    model_source = (path.parent / "model.py").read_text()
    assert cpu_forward(model_source, "Net", inputs=[(64, 3, 32, 32), (1000, 3, 32, 32)]) == [(64, 10), (1000, 10)]


def test_image_folder_positional_transform_and_real_lengths(tmp_path):
    path = script(tmp_path, """
        import torch
        from torch.utils.data import DataLoader, random_split
        from torchvision import datasets, transforms
        folder = datasets.ImageFolder("no/such/folder", transforms.Compose([transforms.Resize((64, 48)),
                                                                          transforms.ToTensor()]))
        train, val = random_split(datasets.MNIST("data", True, transforms.ToTensor()), [55000, 5000])
        batch, labels = next(iter(DataLoader(folder, batch_size=20000)))
        digits, _ = next(iter(DataLoader(train, batch_size=128)))
        count = torch.zeros(len(train))
    """)
    report, notes = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    assert shape(report, "batch") == (20000, 3, 64, 48)  # longer than the stand-in's default length
    assert shape(report, "digits") == (128, 1, 28, 28) and shape(report, "count") == (55000,)
    # CPU: the same transforms on real images of two sizes give each sample's shape.
    from PIL import Image
    from torchvision import transforms

    resize = transforms.Compose([transforms.Resize((64, 48)), transforms.ToTensor()])
    assert [tuple(resize(Image.new("RGB", size)).shape) for size in ((500, 375), (32, 32))] == [(3, 64, 48)] * 2
    assert tuple(transforms.ToTensor()(Image.new("L", (28, 28))).shape) == (1, 28, 28)
    assert any(m.startswith("ImageFolder replaced by FakeData (3×224×224 (a stand-in size") for m in
               notes_of(notes, "stand-in"))


def test_a_dataset_subclass_reading_data_and_targets(tmp_path):
    path = script(tmp_path, """
        import torch
        from PIL import Image
        from torchvision.datasets import CIFAR10, MNIST
        from torchvision import transforms

        class PairedMNIST(MNIST):
            def __getitem__(self, index):
                image = Image.fromarray(self.data[index].numpy(), mode="L")
                return transforms.functional.to_tensor(image), int(self.targets[index])

        pairs = PairedMNIST("data", train=False)
        image, target = pairs[3]
        cifar = CIFAR10("data", download=True)
        pixels = torch.from_numpy(cifar.data[:8].copy()).permute(0, 3, 1, 2)
        names = cifar.classes
    """)
    report, _ = run_in_fork(path)
    assert report.errors == [] and report.stopped is None
    assert shape(report, "image") == (1, 28, 28) and shape(report, "pixels") == (8, 3, 32, 32)


def test_a_dataset_without_a_stand_in_stops_quietly_with_a_note(tmp_path):
    path = script(tmp_path, """
        import torch
        from torchvision import datasets
        x = torch.randn(2, 3)
        voc = datasets.VOCSegmentation("data", year="2012", download=False)
        y = x * 2
    """)
    report, notes = run_in_fork(path)
    assert report.errors == []
    assert report.stopped.startswith("torchvision.datasets.VOCSegmentation needs its files")
    assert notes_of(notes, "data") == ["torchvision.datasets.VOCSegmentation needs its files, which are not here, "
                                       "and has no stand-in: shapes stop at line 5"]
    assert shape(report, "x") == (2, 3)


# -- files ----------------------------------------------------------------------------------------------


def test_torch_load_of_a_workspace_file_gives_its_shapes(tmp_path):
    import torch

    folder = project("saved_tensors", tmp_path)
    report, notes = run_in_fork(folder / "fit_saved.py", workspace=folder)
    assert report.errors == [] and report.stopped is None and notes_of(notes, "data") == []
    data = torch.load(folder / "features.pt")
    assert shape(report, "data") == tuple(data.shape) == (50, 9)
    assert shape(report, "inputs") == tuple(data[:, :-1].shape)
    assert shape(report, "predictions") == (50, 1)
    model = torch.nn.Linear(8, 1)
    model.load_state_dict({"weight": torch.zeros(1, 8), "bias": torch.zeros(1)})
    assert tuple(model(data[:, :-1]).shape) == (50, 1) and tuple(model(data[:3, :-1]).shape) == (3, 1)


def test_torch_load_of_a_missing_file_stops_where_the_data_is_used(tmp_path):
    folder = project("saved_tensors", tmp_path)
    report, notes = run_in_fork(folder / "missing_data.py", workspace=folder)
    assert report.errors == []
    assert report.stopped.startswith("the data of `not_generated_yet.pt` (torch.load at line 5) is not here (line 6)")
    assert notes_of(notes, "data")[-1] == ("the data of `not_generated_yet.pt` (torch.load at line 5) is not here: "
                                           "shapes stop at line 6")


def test_missing_checkpoint_keeps_the_weights_and_outside_files_are_not_read(tmp_path):
    import torch

    outside = tmp_path / "outside.pt"
    torch.save(torch.zeros(2), outside)
    folder = tmp_path / "work"
    folder.mkdir()
    path = script(folder, f"""
        import torch
        model = torch.nn.Linear(3, 2)
        model.load_state_dict(torch.load("best.pt"))
        secret = torch.load({str(outside)!r})
        out = model(torch.randn(4, 3))
    """)
    report, notes = run_in_fork(path, workspace=folder)
    assert report.errors == [] and report.stopped is None
    assert shape(report, "out") == (4, 2)
    messages = notes_of(notes, "data")
    assert messages[0].startswith("`best.pt` is not here: torch.load gave an empty stand-in")
    assert "is outside the workspace" in messages[1]


def test_pickled_objects_are_not_unpickled(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    path = script(folder, """
        import collections, torch
        torch.save(collections.Counter(a=1), "counter.pt")  # a no-op under analysis
        loaded = torch.load("objects.pt")
    """)
    (folder / "objects.pt").write_bytes(b"not a zip file")
    report, notes = run_in_fork(path, workspace=folder)
    assert report.errors == [] and report.stopped is None
    assert "holds more than tensors" in notes_of(notes, "data")[0]


def test_opening_a_missing_file_names_it(tmp_path):
    path = script(tmp_path, """
        import torch
        x = torch.randn(2)
        with open("data/train.txt") as f:
            words = f.read().split()
    """)
    report, notes = run_in_fork(path)
    assert report.errors == [] and "FileNotFoundError" in report.stopped
    assert notes_of(notes, "data") == ["`data/train.txt` does not exist here: shapes stop at this line"]
    assert [n.line for n in notes] == [3]


def test_where_a_driver_stopped_is_said_from_each_files_point_of_view(tmp_path):
    from tests.shapes.fork_runner import job_spec, run_spec_in_fork

    model = script(tmp_path, """
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)
            def forward(self, x):
                return self.fc(x)
    """, "model.py")
    train = script(tmp_path, """
        from model import Net
        net = Net()
        words = open("data/corpus.txt").read().split()
    """, "train.py")
    reports = run_spec_in_fork(job_spec(train, workspace=tmp_path, record=[model]))
    # "line 4" in model.py's report would point at model.py's own fourth line.
    assert reports[str(train)].stopped.startswith("stopped at line 4: FileNotFoundError")
    assert reports[str(model)].stopped.startswith("stopped at train.py line 4: FileNotFoundError")
    assert (reports[str(train)].stopped_line, reports[str(model)].stopped_line) == (3, None)


def test_a_refused_program_looks_missing_to_code_that_expects_it(tmp_path):
    path = script(tmp_path, """
        import subprocess
        import torch
        try:
            sha = subprocess.check_output(["git", "rev-parse", "HEAD"]).decode()
        except Exception:
            sha = "unknown"
        x = torch.randn(2, 5)
        subprocess.run(["nvidia-smi"])
        y = x * 2
    """)
    report, _ = run_in_fork(path)
    assert report.errors == [] and shape(report, "x") == (2, 5)
    assert report.stopped.startswith("a subprocess is not run during shape analysis (line 9)")


def test_optional_positionals_are_never_filled():
    import argparse

    from torch_lsp.shapes.script_env import _fill_required

    parser = argparse.ArgumentParser()
    parser.add_argument("tests", nargs="*")  # unittest.main's: "required" in argparse, yet optional
    parser.add_argument("--out", nargs="?")
    parser.add_argument("--sizes", type=int, nargs=2, required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cpu", action="store_true")
    group.add_argument("--gpu", type=int)
    assert _fill_required(parser, []) == ["--sizes", "32", "32", "--cpu"]
    assert _fill_required(parser, ["--sizes=1", "--gpu", "0"]) == []


def test_a_shape_error_found_with_filled_in_options_is_not_reported(tmp_path):
    path = script(tmp_path, """
        import argparse
        import torch
        parser = argparse.ArgumentParser()
        parser.add_argument("--features", type=int, required=True)
        args = parser.parse_args()
        layer = torch.nn.Linear(10, 4)
        out = layer(torch.randn(2, args.features))
    """)
    report, notes = run_in_fork(path)
    assert report.errors == []
    assert report.stopped.startswith("shape error at line 8 with options torch-lsp filled in (`--features 32`)")
    assert [n.line for n in notes if n.message.startswith("shape error")] == [7]
    # Configured options: the same error is the user's.
    report, _ = run_in_fork(path, argv=("--features", "12"))
    assert report.errors and report.errors[0].code.startswith("TL2") and report.errors[0].range.line == 7


def test_a_missing_file_a_library_looks_for_is_not_the_users_business(tmp_path):
    path = script(tmp_path, """
        import importlib.metadata
        import torch
        versions = [d.version for d in importlib.metadata.distributions()][:3]
        x = torch.randn(2)
    """)
    report, notes = run_in_fork(path)
    assert report.stopped is None and notes_of(notes, "data") == []
