"""Synthesized calls of classes nothing calls: every shape shown is checked against a real CPU
run of the same class at the example sizes and at a second size of each free dimension."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from torch_lsp.analysis.plan import build_plan
from torch_lsp.shapes import job
from torch_lsp.shapes.session import probes_for
from torch_lsp.shapes.spec import JobSpec

PROJECTS = ROOT / "fixtures" / "projects"


def synthesized(path: Path, timeout: float = 120.0):
    source = path.read_text()
    spec = JobSpec(key=str(path), main=build_plan(source, str(path)), record=[str(path)],
                   probes=probes_for(str(path), source), timeout=timeout)
    report = job.run_spec(spec)[str(path)]
    return report, {e["class"]: e for e in report.extras.get("synthesized", []) if "inputs" in e}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"fixture_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_shapes(model, inputs, forward_code) -> dict[tuple[int, str], tuple]:
    """(0-based line, name) -> shape of each name bound in forward, and "return", on CPU."""
    seen: dict[tuple[int, str], tuple] = {}
    last = {}

    def local(frame, event, arg):
        if frame.f_code is not forward_code:
            return local
        line = last.get(id(frame))
        if line is not None:
            for name, value in frame.f_locals.items():
                if isinstance(value, torch.Tensor):
                    seen.setdefault((line, name), tuple(value.shape))
        if event == "line":
            last[id(frame)] = frame.f_lineno - 1
            seen_now = {k for k in seen if k[0] == frame.f_lineno - 1}
            for key in seen_now:
                seen.pop(key)
        elif event == "return" and isinstance(arg, torch.Tensor):
            seen[(frame.f_lineno - 1, "return")] = tuple(arg.shape)
        return local

    def global_trace(frame, event, arg):
        return local if frame.f_code is forward_code else None

    sys.settrace(global_trace)
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        sys.settrace(None)
    return seen


def make_inputs(entry: dict, sizes: dict[str, int]):
    tensors = []
    for item in entry["inputs"]:
        shape = [sizes[d] if isinstance(d, str) else d for d in item["dims"]]
        dtype = getattr(torch, item["dtype"])
        if dtype.is_floating_point:
            tensors.append(torch.randn(shape, dtype=dtype))
        else:
            tensors.append(torch.randint(0, item["high"] or 2, shape, dtype=dtype))
    return tensors


def evaluate(dims, shape, sizes: dict[str, int]) -> tuple:
    """A recorded value's dims at other sizes: `H/2 - 2` with H = 64 -> 30."""
    if dims is None:
        return tuple(shape)
    out = []
    for size, name in zip(shape, dims):
        out.append(size if name is None else eval(re.sub(r"(?<!/)/(?!/)", "//", name), {}, dict(sizes)))  # noqa: S307
    return tuple(out)


def check_against_cpu(path: Path, report, entry, cls) -> int:
    """Every variable recorded in cls.forward, at the example sizes and each variant."""
    code = cls.forward.__code__
    first, last = code.co_firstlineno - 1, max(l for *_, l in code.co_lines() if l) - 1
    recorded = [v for v in report.variables if first < v.line <= last and v.values[-1].kind == "tensor"]
    assert recorded, f"no shapes in {cls.__name__}.forward"
    size_sets = [dict(entry["sizes"])] + [{**entry["sizes"], s: v} for s, v in entry["free"].items()]
    model = cls()  # fixture classes build with their defaults, like the synthesized call
    for sizes in size_sets:
        cpu = cpu_shapes(model, make_inputs(entry, sizes), code)
        for variable in recorded:
            value = variable.values[-1]
            assert (variable.line, variable.name) in cpu, (variable.name, variable.line, sorted(cpu))
            assert evaluate(value.dims, value.shape, sizes) == cpu[(variable.line, variable.name)], \
                (cls.__name__, variable.name, variable.line, value.text(), sizes)
    return len(recorded)


ZOO = PROJECTS / "synth_zoo" / "zoo.py"


@pytest.fixture(scope="module")
def zoo():
    report, entries = synthesized(ZOO)
    return report, entries, load(ZOO)


@pytest.mark.parametrize("name, first_input", [
    ("LeNet", ["B", 3, 32, 32]), ("ConvEncoder", ["B", 3, "H", "W"]), ("SignalNet", ["B", 2, "L"]),
    ("VolumeNet", ["B", 1, "D", "H", "W"]), ("TokenClassifier", ["B", "T"]), ("SequenceEncoder", ["B", "T", 32]),
    ("Denoiser", ["B", 3, "H", "W"]),
])
def test_each_first_layer_kind_gets_an_input_and_cpu_agrees(zoo, name, first_input):
    report, entries, module = zoo
    assert name in entries, report.notes
    entry = entries[name]
    assert entry["inputs"][0]["dims"] == first_input
    assert check_against_cpu(ZOO, report, entry, getattr(module, name)) > 0


def test_linear_first_and_sequential_first(zoo):
    report, entries, module = zoo
    # MLP needs in_features: the construction site `MLP(12)` in Stack gives it.
    assert entries["MLP"]["built_as"] == "MLP(12)"
    assert entries["MLP"]["inputs"][0]["dims"] == ["B", 12]
    assert entries["Stack"]["inputs"][0]["dims"] == ["B", 12]  # Sequential -> MLP(12) -> fc1
    assert check_against_cpu(ZOO, report, entries["Stack"], module.Stack) > 0


def test_symbolic_dims_and_the_input_contract(zoo):
    report, entries, _ = zoo
    lenet = entries["LeNet"]["inputs"][0]
    assert lenet["contract"] == "H = W = 32 is required by fc1"
    texts = {v.name + str(v.line): v.values[-1].text() for v in report.variables}
    assert any(t == "Tensor[B, 6, 14, 14] float32" for t in texts.values())
    assert any(t == "Tensor[B, 32, H/2, W/2] float32" for t in texts.values())  # ConvEncoder.down
    assert entries["Denoiser"]["inputs"][1]["dims"] == ["B"]  # `time`: one step per sample


def test_config_dataclass_model(tmp_path):
    path = PROJECTS / "synth_gpt" / "gpt.py"
    report, entries = synthesized(path)
    assert "GPT" in entries, report.notes
    gpt = entries["GPT"]
    assert gpt["built_as"].startswith("GPT(GPTConfig(")
    assert gpt["inputs"][0]["dims"] == ["B", "T"] and gpt["inputs"][0]["dtype"] == "int64"
    module = load(path)
    code = module.GPT.forward.__code__
    logits = [v for v in report.variables if v.name == "logits"][0].values[-1]
    assert logits.text() == "Tensor[B, T, 100] float32"
    model = module.GPT(module.GPTConfig())
    for sizes in ({"B": 2, "T": gpt["sizes"]["T"]}, {"B": 3, "T": gpt["free"]["T"]}):
        cpu = cpu_shapes(model, make_inputs(gpt, {**gpt["sizes"], **sizes}), code)
        recorded = [v for v in report.variables if v.name == "logits"][0]
        assert evaluate(logits.dims, logits.shape, {**gpt["sizes"], **sizes}) == cpu[(recorded.line, "logits")]


def test_stated_inputs_and_their_precedence():
    path = PROJECTS / "synth_stated" / "model.py"
    from torch_lsp.config import load_for_path

    settings = load_for_path(path).settings
    source = path.read_text()
    spec = JobSpec(key=str(path), main=build_plan(source, str(path)), record=[str(path)],
                   probes=probes_for(str(path), source, settings), timeout=120)
    report = job.run_spec(spec)[str(path)]
    entries = {e["class"]: e["inputs"][0] for e in report.extras["synthesized"]}
    assert (entries["PragmaNet"]["dims"], entries["PragmaNet"]["source"]) == (["N", 3, 40, 40], "pragma")
    assert (entries["TypedNet"]["dims"], entries["TypedNet"]["source"]) == (["batch", "seq", 12], "jaxtyping")
    assert (entries["BothNet"]["dims"], entries["BothNet"]["source"]) == ([4, 5, 6], "pragma")
    assert (entries["LightningStyle"]["dims"], entries["LightningStyle"]["source"]) == ([5, 7], "example_input_array")
    assert (entries["Configured"]["dims"], entries["Configured"]["source"]) == (["B", 2, 9], "pyproject.toml")
    module = load(path)
    for name, cls in [("PragmaNet", module.PragmaNet), ("TypedNet", module.TypedNet), ("Configured", module.Configured)]:
        entry = next(e for e in report.extras["synthesized"] if e["class"] == name)
        assert check_against_cpu(path, report, entry, cls) > 0


SEQUENCES = PROJECTS / "synth_zoo" / "sequences.py"


@pytest.mark.parametrize("name, first_input", [
    ("NormFirst", ["B", "T", 24]), ("SeqFirstGRU", ["T", "B", 12]), ("BatchNormFirst", ["B", 7]),
])
def test_norms_and_a_sequence_first_recurrent_layer_first(name, first_input, sequences):
    report, entries, module = sequences
    assert name in entries, report.notes
    assert entries[name]["inputs"][0]["dims"] == first_input
    assert check_against_cpu(SEQUENCES, report, entries[name], getattr(module, name)) > 0


@pytest.fixture(scope="module")
def sequences():
    report, entries = synthesized(SEQUENCES)
    return report, entries, load(SEQUENCES)


def test_a_dict_batch_gets_one_entry_per_key_forward_reads():
    path = PROJECTS / "synth_misc" / "batches.py"
    report, entries = synthesized(path)
    [batch] = entries["ImageClassifier"]["inputs"]
    assert batch["container"] == "dict"
    fields = {f["name"]: f for f in batch["fields"]}
    assert fields["batch.image"]["dims"] == ["B", 3, "H", "W"]
    assert (fields["batch.label"]["dims"], fields["batch.label"]["dtype"]) == (["B"], "int64")
    assert [f["dims"] for f in entries["DictHead"]["inputs"][0]["fields"]] == [["B", 32]]
    texts = {v.name: v.values[-1] for v in report.variables}
    assert texts["logits"].text() == "Tensor[B, 5] float32" and texts["features"].text() == "Tensor[B, 8] float32"
    model = load(path).ImageClassifier().eval()
    for b, side in ((2, 32), (3, 20)):  # B and H, W are free: CPU agrees at other sizes
        with torch.no_grad():
            logits, loss = model({"image": torch.randn(b, 3, side, side), "label": torch.randint(0, 5, (b,))})
        assert tuple(logits.shape) == (b, 5) and loss.shape == ()
    assert {"B", "H"} <= set(entries["ImageClassifier"]["free"])
    # `assert image_sizes.shape[1] == 2` and no layer: the input is [B, 2].
    queries, sizes = entries["BoxHead"]["inputs"]
    assert (queries["dims"], sizes["dims"]) == (["B", "T", 32], ["B", 2])
    scaled = [v for v in report.variables if v.name == "return" and v.values[-1].dims][-1].values[-1]
    head = load(path).BoxHead().eval()
    for b, t in ((2, 16), (3, 8)):
        with torch.no_grad():
            out = head(torch.randn(b, t, 32), torch.tensor([[480.0, 640.0]] * b))
        assert evaluate(scaled.dims, scaled.shape, {"B": b, "T": t}) == tuple(out.shape)


def test_a_config_parameter_gets_the_config_object_not_a_model_with_the_same_attributes():
    path = PROJECTS / "synth_gpt" / "char_models.py"
    report, entries = synthesized(path)
    assert entries["BigramTable"]["built_as"].startswith("BigramTable(CharConfig(")
    assert entries["WindowMLP"]["built_as"].startswith("WindowMLP(CharConfig(")
    window = entries["WindowMLP"]["inputs"][0]
    assert window["dims"] == ["B", 16] and window["contract"] == "T = 16 is required by head"
    module = load(path)
    config = module.CharConfig(block_size=16, vocab_size=100)
    texts = {v.name: v.values[-1] for v in report.variables}
    for batch in (2, 3):  # B is free: CPU agrees at two batch sizes
        with torch.no_grad():
            idx = torch.randint(0, 100, (batch, 16))
            mlp = module.WindowMLP(config)
            assert evaluate(texts["flat"].dims, texts["flat"].shape, {"B": batch}) == \
                tuple(mlp.wte(idx).view(batch, -1).shape)
            assert tuple(mlp(idx).shape) == (batch, 100)
            assert evaluate(texts["scores"].dims, texts["scores"].shape, {"B": batch, "T": 16}) == \
                tuple(module.BigramTable(config)(idx).shape)


LOOPS = PROJECTS / "synth_zoo" / "loops.py"


def test_layers_reached_through_loops_over_module_lists():
    """`for conv, norm in self.layers` / `for i, block in enumerate(self.blocks)`: the first
    iteration's layer gives the input (a transformer layer's [B, T, d], not the head's [B, d])."""
    report, entries = synthesized(LOOPS)
    module = load(LOOPS)
    assert entries["TokenMixer"]["inputs"][0]["dims"] == ["B", "T", 20]
    assert entries["VolumeBlocks"]["inputs"][0]["dims"] == ["B", 6, "D", "H", "W"]
    for name in ("TokenMixer", "VolumeBlocks"):
        assert check_against_cpu(LOOPS, report, entries[name], getattr(module, name)) > 0
