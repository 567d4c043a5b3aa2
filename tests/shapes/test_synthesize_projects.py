"""Synthesized calls in their own (background) jobs on fixture projects that look like real
repositories: objects as inputs (`Batch(tensors, mask)`), module arguments from builders and
argparse defaults, a torchvision backbone, classes found by name and by the attributes a
constructor reads, recurrent states, lists of images, `*args` wrappers, a script that stops
before its class, a package whose `__init__` fails. Every shape asserted is checked against the
same model run on CPU at the example sizes and at a second size of each free dimension."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tests.shapes.test_synthesize import cpu_shapes, evaluate
from torch_lsp.shapes import job
from torch_lsp.shapes.command import session_for
from torch_lsp.shapes.session import RunRequest, probes_for

PROJECTS = ROOT / "fixtures" / "projects"
DETECTOR = PROJECTS / "synth_detector"
MISC = PROJECTS / "synth_misc"


def probe_job(path: Path, monkeypatch, names: list[str] | None = None):
    """Run the background job the session makes for `path`'s classes, in process."""
    session = session_for(path)
    text = path.read_text()
    probes = [p for p in probes_for(str(path), text, session.settings_provider(), session.root)
              if names is None or p.class_name in names]
    spec = session.probe_spec(RunRequest(str(path), text), probes, "test#probes-0.0")
    spec.timeout = 300  # CPU seconds: a loaded test machine must not change the result
    assert spec.background and not spec.main.source
    for root in reversed(spec.roots):
        monkeypatch.syspath_prepend(root)
    monkeypatch.chdir(spec.cwd)
    report = job.run_spec(spec)[str(path)]
    return report, {e["class"]: e for e in report.extras.get("synthesized", []) if "inputs" in e}


def import_fixture(name: str, root: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(root))
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("models", "util", "layers", "textpkg")]:
        monkeypatch.delitem(sys.modules, loaded)
    return importlib.import_module(name)


def tensor(dims, dtype, sizes):
    shape = [sizes[d] if isinstance(d, str) else d for d in dims]
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.zeros(shape, dtype=torch.bool)
    return torch.randint(0, 2, shape, dtype=dtype)


def arguments(entry: dict, sizes: dict, containers: dict):
    """The entry's inputs at `sizes`, built on CPU (objects from `containers`: name -> class)."""
    def build(item):
        if item.get("container"):
            return containers[item["container"]](*[build(f) for f in item["fields"]])
        value = [tensor(item["dims"], getattr(torch, item["dtype"]), sizes) for _ in range(item.get("group", 1))]
        if item.get("group", 1) == 1:
            return value[0]
        return value if item.get("listed") else tuple(value)
    return [build(item) for item in entry["inputs"]]


def assert_same_as_cpu(report, entry: dict, model, containers: dict | None = None) -> int:
    """Each tensor recorded in the model's forward equals the CPU run's, at the example sizes
    and with each free size changed (dims evaluated by name)."""
    code = type(model).forward.__code__
    first, last = code.co_firstlineno - 1, max(line for *_, line in code.co_lines() if line) - 1
    recorded = [v for v in report.variables if first < v.line <= last and v.values[-1].kind == "tensor"]
    assert recorded, f"no shapes in {type(model).__name__}.forward"
    for sizes in [dict(entry["sizes"])] + [{**entry["sizes"], s: v} for s, v in entry["free"].items()]:
        with torch.no_grad():
            cpu = cpu_shapes(model, arguments(entry, sizes, containers or {}), code)
        for variable in recorded:
            value = variable.values[-1]
            assert evaluate(value.dims, value.shape, sizes) == cpu[(variable.line, variable.name)], \
                (variable.name, variable.line, value.text(), sizes)
    return len(recorded)


def test_an_object_input_built_from_builders_and_workspace_argparse_defaults(monkeypatch):
    report, entries = probe_job(DETECTOR / "models" / "detector.py", monkeypatch)
    entry = entries["Detector"]
    # `backbone` and `encoder` come from the file's builders, called with main.py's defaults.
    assert entry["built_as"] == "Detector(build_backbone(args), build_encoder(args), 3, 10)"
    samples = entry["inputs"][0]
    assert samples["container"] == "Batch"
    assert [(f["name"], f["dims"], f["dtype"]) for f in samples["fields"]] == [
        ("samples.tensors", ["B", 3, "H", "W"], "float32"), ("samples.mask", ["B", "H", "W"], "bool")]
    detector = import_fixture("models.detector", DETECTOR, monkeypatch)
    structures = import_fixture("util.structures", DETECTOR, monkeypatch)
    main = import_fixture("main", DETECTOR, monkeypatch)
    args = main.get_parser().parse_args([])
    model = detector.Detector(detector.build_backbone(args), detector.build_encoder(args), 3, 10).eval()
    assert assert_same_as_cpu(report, entry, model, {"Batch": structures.Batch}) >= 4
    logits = next(v for v in report.variables if v.name == "logits").values[-1]
    assert logits.text() == "Tensor[B, 10, 4] float32"


def test_a_torchvision_backbone_and_a_layer_class_found_by_name(monkeypatch):
    report, entries = probe_job(DETECTOR / "models" / "backbone.py", monkeypatch)
    assert entries["Backbone"]["built_as"] == "Backbone(torchvision.models.resnet18(), 512)"
    report_encoder, encoders = probe_job(DETECTOR / "models" / "encoder.py", monkeypatch)
    encoder = encoders["Encoder"]
    assert encoder["built_as"] == "Encoder(EncoderLayer(64, 4), 2)"  # `encoder_layer` -> EncoderLayer
    # `b, c, h, w = src.shape` and the attention's width: an image-like [B, 64, H, W]; `pos`
    # is added to `src`, so it takes its shape.
    assert [i["dims"] for i in encoder["inputs"]] == [["B", 64, "H", "W"], ["B", 64, "H", "W"]]
    module = import_fixture("models.encoder", DETECTOR, monkeypatch)
    model = module.Encoder(module.EncoderLayer(64, 4), 2).eval()
    assert assert_same_as_cpu(report_encoder, encoder, model) >= 1

    from torchvision.models import resnet18

    backbone = import_fixture("models.backbone", DETECTOR, monkeypatch)
    structures = import_fixture("util.structures", DETECTOR, monkeypatch)
    model = backbone.Backbone(resnet18(), 512).eval()
    assert assert_same_as_cpu(report, entries["Backbone"], model, {"Batch": structures.Batch}) >= 2


def test_recurrent_state_list_of_images_args_wrapper_and_duck_typed_argument(monkeypatch):
    report, entries = probe_job(MISC / "layers.py", monkeypatch)
    layers = import_fixture("layers", MISC, monkeypatch)
    tagger = entries["Tagger"]["inputs"]
    assert (tagger[1]["dims"], tagger[1]["group"]) == ([2, "B", 32], 2)  # (h0, c0): [layers, B, hidden]
    assert assert_same_as_cpu(report, entries["Tagger"], layers.Tagger().eval()) >= 2
    pooler = entries["Pooler"]["inputs"][0]
    assert (pooler["dims"], pooler["group"], pooler["listed"]) == ([3, "H", "W"], 2, True)
    assert assert_same_as_cpu(report, entries["Pooler"], layers.Pooler().eval()) >= 2
    assert entries["PassThrough"]["built_as"] == "PassThrough(nn.Identity())"
    assert assert_same_as_cpu(report, entries["PassThrough"], layers.PassThrough(torch.nn.Identity())) >= 1
    # `assert model.conditional`: the class defining `conditional`, with that flag on.
    assert entries["Guidance"]["built_as"] == "Guidance(Conditional(conditional=True))"
    model = layers.Guidance(layers.Conditional(conditional=True)).eval()
    assert assert_same_as_cpu(report, entries["Guidance"], model) >= 1


def test_a_script_that_stops_before_its_class_is_loaded_for_its_definitions(monkeypatch):
    report, entries = probe_job(MISC / "script.py", monkeypatch)
    entry = entries["CharModel"]
    assert entry["built_as"] == "CharModel(100)"  # the site's `len(vocab)` failed: a value by name
    assert "script.py line 6 was skipped while the file was loaded for synthesized calls: FileNotFoundError" \
        in report.notes[0].message
    assert entry["inputs"][0]["dims"] == ["B", "T"]
    logits = next(v for v in report.variables if v.name == "logits").values[-1]
    assert logits.text() == "Tensor[B, T, 100] float32"
    source = (MISC / "script.py").read_text()
    namespace: dict = {"nn": torch.nn, "torch": torch}
    exec(source[source.index("class CharModel"):source.index("model = CharModel")], namespace)  # the class alone
    model = namespace["CharModel"](100).eval()
    with torch.no_grad():
        for sizes in ({"B": 2, "T": entry["sizes"]["T"]}, {"B": 3, "T": entry["free"]["T"]}):
            out = model(torch.randint(0, 100, (sizes["B"], sizes["T"])))
            assert tuple(out.shape) == evaluate(logits.dims, logits.shape, sizes)


@pytest.mark.slow  # the real command: a shape worker, the driver job, then background jobs
def test_a_package_whose_init_fails_still_runs_and_its_classes_get_shapes(monkeypatch):
    import json
    import subprocess
    import types

    model_path = PROJECTS / "synth_vocab" / "textpkg" / "model.py"
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "shapes", "--format", "json", str(model_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stopped"] is None  # the driver ran in a bare `textpkg` (its __init__ not run)
    assert any(n["message"].startswith("package textpkg's __init__ failed (FileNotFoundError")
               for n in report["notes"])  # (after the note of the data file that is missing)
    entry = next(e for e in report["extras"]["synthesized"] if e["class"] == "TextEncoder")
    assert entry["inputs"][0]["dims"] == ["B", "T"] and entry["inputs"][0]["dtype"] == "int64"
    # The same model on CPU, imported the same way (a bare package), at two sizes.
    package = types.ModuleType("textpkg")
    package.__path__ = [str(model_path.parent)]
    monkeypatch.setitem(sys.modules, "textpkg", package)
    for name in ("textpkg.layers", "textpkg.model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    model = importlib.import_module("textpkg.model").TextEncoder().eval()
    recorded = {(v["name"], v["line"]): v["values"][-1] for v in report["variables"]}
    x = recorded[("x", model_path.read_text().splitlines().index("        x = self.blocks(x)"))]
    assert x["dims"] == ["B", "T", None]
    with torch.no_grad():
        for batch, length in ((entry["sizes"]["B"], entry["sizes"]["T"]), (3, entry["free"]["T"])):
            hidden = model.blocks(model.embed(torch.randint(0, 64, (batch, length))))
            assert tuple(hidden.shape) == (batch, length, x["shape"][2])


@pytest.mark.slow  # the real command: the driver job, then the same script with larger batches
def test_a_loader_batch_is_named_after_its_batch_size_only_where_it_follows_the_batch():
    import json
    import subprocess

    script = MISC / "train_loader.py"
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "shapes", "--format", "json", str(script)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    shown = {v["name"]: v["values"][-1] for v in report["variables"]}

    def text(value):
        return [d or s for d, s in zip(value["dims"] or [None] * len(value["shape"]), value["shape"])]

    assert text(shown["features"]) == ["batch_size", 8]  # `batch_size=args.batch_size`
    assert text(shown["logits"]) == ["batch_size", 3]
    assert text(shown["pairs"]) == ["2*batch_size", 3]
    assert text(shown["hidden"]) == [16, 4]  # 16 like the batch, but it does not follow it
    # The same layers on CPU at two batch sizes.
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    for batch in (16, 5):
        logits = model(torch.randn(batch, 8))
        assert tuple(logits.shape) == (batch, 3) and tuple(torch.cat([logits, logits]).shape) == (2 * batch, 3)
