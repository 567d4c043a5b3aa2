"""One shape job, in process: recording per line and per expression, errors, data dependence."""

import textwrap

from tests.shapes.helpers import assert_same_as_cpu, cpu_run, line_of, shape_of, value_shapes, variable

LENET = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)

net = Net()
images = torch.randn(8, 3, 32, 32)
out = net(images)
'''


def test_lenet_shapes_match_cpu_per_line(run_meta):
    report = run_meta(LENET)
    assert report.errors == [] and report.stopped is None
    namespace = cpu_run(LENET)
    assert_same_as_cpu(report, namespace, "images", "out")
    # Inside forward: the value after each line, checked against the same layers on CPU.
    net, images = namespace["net"], namespace["images"]
    import torch
    import torch.nn.functional as F
    after_first = net.pool(F.relu(net.conv1(images)))
    after_second = net.pool(F.relu(net.conv2(after_first)))
    assert value_shapes(variable(report, "x", line_of(LENET, "F.relu(self.conv1(x))")).values[0]) == shape_of(after_first)
    assert value_shapes(variable(report, "x", line_of(LENET, "F.relu(self.conv2(x))")).values[0]) == shape_of(after_second)
    assert value_shapes(variable(report, "x", line_of(LENET, "torch.flatten")).values[0]) == shape_of(torch.flatten(after_second, 1))
    assert variable(report, "x", line_of(LENET, "def forward")).values[0].shape == (8, 3, 32, 32)


def test_each_call_in_a_line_has_its_own_range_and_module(run_meta):
    report = run_meta(LENET)
    line = line_of(LENET, "F.relu(self.conv1(x))")
    text = textwrap.dedent(LENET).splitlines()[line]
    col = text.index("self.conv1(x)")
    conv = report.expression_at(line, col + 6)
    assert (conv.range.col, conv.range.end_col) == (col, col + len("self.conv1(x)"))
    assert conv.values[0].shape == (8, 6, 28, 28)  # conv1 output, before pooling
    assert conv.module.startswith("Conv2d(3, 6, kernel_size=(5, 5)")
    outer = report.expression_at(line, text.index("self.pool") + 1)
    assert outer.values[0].shape == (8, 6, 14, 14)
    namespace = cpu_run(LENET)
    assert tuple(namespace["net"].conv1(namespace["images"]).shape) == (8, 6, 28, 28)


def test_script_level_mismatch_is_reported_on_the_failing_line(run_meta):
    source = "import torch\nimport torch.nn as nn\na = torch.rand(10, 1023)\nfc = nn.Linear(1024, 512)\nx = fc(a)\n"
    report = run_meta(source)
    assert len(report.errors) == 1
    error = report.errors[0]
    assert error.code.startswith("TL2")
    assert (error.range.line, error.range.col, error.range.end_col) == (4, 4, 9)
    assert variable(report, "a").values[0].shape == (10, 1023)
    try:
        cpu_run(source)
    except RuntimeError as cpu_error:
        assert "1023" in str(cpu_error)
    else:
        raise AssertionError("the CPU run should fail too")


def test_tuples_from_lstm_and_every_shape_a_line_takes(run_meta):
    source = '''
    import torch
    import torch.nn as nn
    lstm = nn.LSTM(10, 20, batch_first=True)
    seq, (h, c) = lstm(torch.randn(4, 7, 10))
    both = lstm(torch.randn(4, 7, 10))
    sizes = []
    for n in range(1, 4):
        y = torch.zeros(n, 2)
    '''
    report = run_meta(source)
    namespace = cpu_run(source)
    assert_same_as_cpu(report, namespace, "seq", "h", "c", "both")
    assert [v.shape for v in variable(report, "y").values] == [(1, 2), (2, 2), (3, 2)]


def test_data_dependent_ops_rerun_on_cpu_not_errors(run_meta):
    source = '''
    import torch
    x = torch.randn(6, 4)
    positive = x[x > 0]
    total = x.sum().item()
    y = torch.ones(3, 5)
    '''
    report = run_meta(source)
    assert report.errors == []
    assert report.reran_on_cpu
    assert variable(report, "y").values[0].shape == (3, 5)


def test_error_while_constructing_goes_to_the_constructor_line(run_meta):
    source = '''
    import torch.nn as nn
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(embed_dim=10, num_heads=3)
    block = Block()
    '''
    report = run_meta(source)
    assert len(report.errors) == 1
    assert report.errors[0].range.line == line_of(source, "MultiheadAttention")


def test_training_step_with_adam_and_shuffled_loader_is_not_an_error(run_meta):
    source = '''
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset
    model = nn.Linear(20, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(torch.randn(64, 20), torch.randint(0, 3, (64,))), batch_size=16, shuffle=True)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(100):
        for inputs, targets in loader:
            optimizer.zero_grad()
            logits = model(inputs)
            loss = criterion(logits, targets)
            loss.backward()
            optimizer.step()
            print(f"loss {loss.item():.3f}")
    '''
    report = run_meta(source, timeout=20)
    assert report.errors == [], report.errors
    assert variable(report, "logits").values == [variable(report, "logits").values[0]]  # ran once
    assert variable(report, "logits").values[0].shape == (16, 3)
    assert variable(report, "loss").values[0].shape == ()


def test_a_failing_statement_shows_no_stale_value(run_meta):
    source = '''
    import torch
    x = torch.ones(2, 3)
    x = x @ torch.ones(4, 5)
    '''
    report = run_meta(source)
    assert report.errors and report.errors[0].range.line == line_of(source, "x = x @")
    assert [v.line for v in report.variables if v.name == "x"] == [line_of(source, "x = torch.ones")]


CALLBACKS = '''
import torch

class Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        scaled = grad * 2
        return scaled

seen = []
weights = torch.randn(4, 3, requires_grad=True)
weights.register_hook(lambda g: seen.append(g.sum(0)))
loss = Scale.apply(weights @ torch.randn(3, 5)).sum()
loss.backward()
'''


def test_user_code_that_torch_calls_back_is_still_recorded(run_meta):
    """Line tracing is off inside torch calls (library frames only), except where torch runs the
    user's callbacks: an autograd Function's backward runs inside `loss.backward()`."""
    report = run_meta(CALLBACKS)
    assert report.errors == [] and report.stopped is None
    namespace = cpu_run(CALLBACKS)
    assert_same_as_cpu(report, namespace, "weights", "loss")
    scaled = variable(report, "scaled", line_of(CALLBACKS, "scaled = grad * 2"))
    assert scaled.values[0].shape == (4, 5)


CPU_TENSORS = """
import numpy as np
import torch
import torch.nn as nn
table = torch.from_numpy(np.ones((4, 6), dtype=np.float32))  # created on the CPU whatever the device
layer = nn.Linear(6, 3)
rows = torch.cat([table, layer.weight.detach()], dim=0)
mixed = layer(table) + torch.zeros(3)
pair = torch.stack((table[0], torch.ones(6)))
size = table.size(0) + table.shape[1] + table.dim()
leaf = layer.weight.is_leaf and table.grad_fn is None
"""


def test_tensors_made_on_the_cpu_are_moved_to_the_job_device_and_read_as_they_are(run_meta):
    report = run_meta(CPU_TENSORS)
    assert report.errors == [] and report.stopped is None, report
    assert_same_as_cpu(report, cpu_run(CPU_TENSORS), "table", "rows", "mixed", "pair")


DEFAULT_DEVICE = """
import torch
import torch.nn as nn
torch.set_default_device("cuda")
model = nn.Linear(4, 2)
x = torch.randn(3, 4)
with torch.device("cuda"):
    steps = torch.arange(5)
y = model(x) + steps[:2]
"""


def test_a_default_device_the_user_sets_does_not_take_the_job_off_its_device(run_meta):
    import torch

    report = run_meta(DEFAULT_DEVICE)  # no GPU here: a cuda tensor would fail
    assert getattr(torch._GLOBAL_DEVICE_CONTEXT, "device_context", None) is None  # not kept past the job
    assert torch.zeros(1).device.type == "cpu"
    assert report.errors == [] and report.stopped is None, report
    assert report.device == "meta"
    try:
        reference = cpu_run(DEFAULT_DEVICE.replace('"cuda"', '"cpu"'))
    finally:
        torch.set_default_device(None)  # the reference ran the user's line in this process
    assert_same_as_cpu(report, reference, "x", "steps", "y")


def test_metadata_reads_pass_the_recording_mode_untouched():
    import torch

    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.tracer import Recorder, RecordingMode

    recorder = Recorder(build_plan("x = 1\n", "/nowhere/job.py"), torch.device("meta"))
    handled = []
    recorder.record_output = lambda output, module=None: handled.append(output)
    on_cpu = torch.ones(2, 5)
    with torch.device("meta"), RecordingMode(recorder):
        assert on_cpu.shape == (2, 5) and on_cpu.dim() == 2 and on_cpu.size(1) == 5
        with torch.no_grad():
            assert on_cpu.dtype == torch.float32 and on_cpu.is_leaf and on_cpu.grad_fn is None
        assert handled == []  # neither recorded nor moved to meta
        moved = on_cpu + torch.ones(5)  # a computation is: the CPU tensor joins the job's device
    assert moved.device.type == "meta" and [tuple(out.shape) for out in handled] == [(5,), (2, 5)]


def test_library_frames_inside_a_torch_call_are_not_traced():
    """The cost this saves: on meta, batch norm is a Python decomposition (tens of frames a
    call); the job's line tracer used to be called for each of them."""
    import sys

    import torch

    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.tracer import Recorder, RecordingMode

    traced: list[str] = []

    def trace(frame, event, arg):
        traced.append(frame.f_code.co_filename)

    recorder = Recorder(build_plan("x = 1\n", "/nowhere/job.py"), torch.device("meta"))
    x = torch.randn(2, 3, 4, 4, device="meta")
    mean, var = torch.zeros(3, device="meta"), torch.ones(3, device="meta")
    with RecordingMode(recorder):
        sys.settrace(trace)
        try:
            torch.nn.functional.batch_norm(x, mean, var, training=True)
        finally:
            sys.settrace(None)
    decompositions = [name for name in traced if "_decomp" in name or "_refs" in name]
    assert decompositions == []
    assert any(name.endswith("tracer.py") for name in traced)  # the mode itself ran traced
    traced.clear()
    sys.settrace(trace)  # the same call outside the mode: the decomposition's frames are seen
    try:
        torch.nn.functional.batch_norm(x, mean, var, training=True)
    finally:
        sys.settrace(None)
    assert any("_decomp" in name or "_refs" in name for name in traced)


def test_an_observer_that_fails_to_stop_costs_its_own_figures_not_the_shapes(monkeypatch):
    """A bug in a cost observer's clean-up once took every shape of the file with it (the job's
    process died); the tracer's results do not depend on the observers."""
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes import job, observers
    from torch_lsp.shapes.spec import JobSpec

    class Broken:
        name = "broken"

        def start(self, context):
            pass

        def stop(self):
            raise RuntimeError("observer bug")

        def results(self):
            return {}

    monkeypatch.setattr(observers, "create", lambda names, context: [Broken()])
    plan = build_plan(textwrap.dedent(LENET), "/virtual/user_code.py")
    report = job.run_spec(JobSpec(key="k", main=plan, observers=["broken"], timeout=30.0))["/virtual/user_code.py"]
    assert report.errors == [] and report.stopped is None
    assert variable(report, "out", line_of(LENET, "out = net(images)")).values[0].shape == (8, 10)
