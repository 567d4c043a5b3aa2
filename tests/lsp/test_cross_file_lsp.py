"""Models used from another file, through the real protocol (issue 10, points 1, 5 and 7).

Each test copies a fixture project (fixtures/projects/) to a temporary folder, starts the server
on it as the workspace root, and checks what an editor shows: hover text, inlay hints and
diagnostics with related information. Every shape asserted is also computed on CPU by running
the same model at two batch sizes.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import FIXTURES
from tests.lsp import held_scan_server
from tests.lsp.conftest import SERVER, handle_code_lens_refresh, open_text, replace_text

pytestmark = pytest.mark.slow  # server and shape worker processes

PROJECTS = FIXTURES / "projects"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient, tmp_path):
    """A client whose workspace is a copy of the model + train.py project."""
    yield await _start(lsp_client, tmp_path, {})
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client_without_synthesis(lsp_client: LanguageClient, tmp_path):
    """The same, with synthesized calls off: only drivers give shapes."""
    yield await _start(lsp_client, tmp_path, {"synthesize": False})
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def scripts_client(lsp_client: LanguageClient, tmp_path):
    """A workspace of scripts as repositories write them: a DDP script, required options."""
    yield await _start(lsp_client, tmp_path, {}, {"ddp_script": "ddp", "required_args": "cli"})
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[
        sys.executable, str(Path(__file__).with_name("held_scan_server.py"))]))
async def held_scan_client(lsp_client: LanguageClient, tmp_path):
    """The model + train.py project, on a server whose first scan waits for `.scan-may-end`."""
    yield await _start(lsp_client, tmp_path, {"synthesize": False})
    await lsp_client.shutdown_session()


async def _start(lsp_client: LanguageClient, tmp_path, execution: dict,
                 projects: dict[str, str] | None = None) -> LanguageClient:
    """Copy fixture projects (name -> folder under the root; "" is the root) and initialize."""
    root = tmp_path / "project"
    for name, folder in (projects or {"model_train": "", "relative_pkg": "pkgs"}).items():
        shutil.copytree(PROJECTS / name, root / folder, dirs_exist_ok=True)
    capabilities = client_capabilities("visual-studio-code")
    capabilities.workspace.did_change_watched_files = types.DidChangeWatchedFilesClientCapabilities(
        dynamic_registration=True)
    handle_code_lens_refresh(lsp_client)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities, root_uri=root.as_uri(),
        initialization_options={"debounceMs": 0, "execution": {"timeout": 30, **execution}}))
    lsp_client.root = root
    return lsp_client


async def report_where(client: LanguageClient, uri: str, predicate, timeout: float = 120.0) -> dict:
    """Poll the server's latest report for `uri` until `predicate(report)` holds."""
    deadline = time.monotonic() + timeout
    report = None
    while time.monotonic() < deadline:
        report = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri]))
        if report and predicate(report):
            return report
        await asyncio.sleep(0.1)
    raise AssertionError(f"no matching report for {uri} within {timeout} s; last: {report}")


async def hover(client: LanguageClient, uri: str, line: int, character: int) -> str:
    result = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))
    return result.contents.value if result else ""


def shapes_at(report: dict, line: int, name: str) -> list[list[int]]:
    return [v["shape"] for var in report["variables"] if var["line"] == line and var["name"] == name
            for v in var["values"]]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines()) if needle in line)


def cpu_net_shapes(model_file: Path, batches: list[int]) -> dict[int, dict[str, tuple]]:
    """model.py's Net on CPU: the shape after its first line and its output, per batch size."""
    import torch
    import torch.nn.functional as F

    namespace: dict = {}
    exec(compile(model_file.read_text(), str(model_file), "exec"), namespace)
    net = namespace["Net"]()
    shapes = {}
    for batch in batches:
        x = torch.randn(batch, 3, 32, 32)
        shapes[batch] = {"first": tuple(net.pool(F.relu(net.conv1(x))).shape), "logits": tuple(net(x).shape)}
    return shapes


async def test_model_file_gets_shapes_from_the_training_script(client):
    model = client.root / "model.py"
    text = model.read_text()
    uri = model.as_uri()
    open_text(client, uri, text)
    first = line_of(text, "x = self.pool(F.relu(self.conv1(x)))")
    logits = line_of(text, "logits = self.fc3(x)")
    report = await report_where(client, uri, lambda r: shapes_at(r, logits, "logits"))
    expected = cpu_net_shapes(model, [64, 1000])
    # Both loaders of train.py ran through forward: batch 64 (training) and 1000 (test), never
    # the stand-in dataset's length.
    assert shapes_at(report, first, "x") == [list(expected[64]["first"]), list(expected[1000]["first"])]
    assert shapes_at(report, logits, "logits") == [list(expected[64]["logits"]), list(expected[1000]["logits"])]
    assert report["origin"] == {"kind": "driver", "path": str(client.root / "train.py"), "line": 24, "detail": ""}

    text_hover = await hover(client, uri, first, 8)
    # The batch dimension may be shown by name (B, after the loaders' batch_size): the sizes
    # above are the report's; here, that both loaders' shapes are shown.
    assert re.search(r"`x`: `Tensor\[(64|B), 6, 14, 14\] float32 \| Tensor\[(1000|B), 6, 14, 14\] float32`", text_hover)
    assert "*from train.py:25*" in text_hover
    assert "train.py:11: CIFAR10 replaced by FakeData (3×32×32, 10 classes, 50,000 samples)" in text_hover

    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=first, character=0), end=types.Position(line=logits, character=99))))
    assert hints[0].position.line == first
    assert re.fullmatch(r"Tensor\[(64|B), 6, 14, 14\] \| Tensor\[(1000|B), 6, 14, 14\]", hints[0].label), hints[0].label
    # The server asked to hear about .py files changing on disk.
    assert any(r.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES for r in getattr(client, "registrations", []))


async def test_editing_the_driver_updates_the_model_and_stand_ins_show_in_its_hover(client):
    model, train = client.root / "model.py", client.root / "train.py"
    model_uri, train_uri = model.as_uri(), train.as_uri()
    model_text, train_text = model.read_text(), train.read_text()
    logits = line_of(model_text, "logits = self.fc3(x)")
    open_text(client, model_uri, model_text)
    open_text(client, train_uri, train_text)
    await report_where(client, model_uri, lambda r: shapes_at(r, logits, "logits"))
    # Hover on the dataset line of train.py: the stand-in is said there.
    await report_where(client, train_uri, lambda r: any(n["kind"] == "stand-in" for n in r["notes"]))
    dataset_line = line_of(train_text, "train_set = ")
    said = await hover(client, train_uri, dataset_line, 2)
    assert "CIFAR10 replaced by FakeData (3×32×32, 10 classes, 50,000 samples)" in said

    # An unsaved edit of train.py: a smaller training batch and test batch.
    edited = train_text.replace("batch_size=64", "batch_size=8").replace("batch_size=1000", "batch_size=3")
    replace_text(client, train_uri, edited, version=2)
    report = await report_where(client, model_uri, lambda r: shapes_at(r, logits, "logits") == [[8, 10], [3, 10]])
    expected = cpu_net_shapes(model, [8, 3])
    assert shapes_at(report, logits, "logits") == [list(expected[8]["logits"]), list(expected[3]["logits"])]
    assert not train.read_text().count("batch_size=8")  # nothing was written to disk


async def test_shape_error_inside_the_model_is_reported_in_both_files_with_related_information(client):
    model, train = client.root / "model.py", client.root / "train.py"
    model_uri, train_uri = model.as_uri(), train.as_uri()
    broken = model.read_text().replace("nn.Linear(16 * 5 * 5, 120)", "nn.Linear(16 * 4 * 4, 120)")
    fc1_line = line_of(broken, "x = F.relu(self.fc1(x))")
    call_line = line_of(train.read_text(), "outputs = net(images)")
    open_text(client, model_uri, broken)
    open_text(client, train_uri, train.read_text())

    async def shape_diagnostics(uri: str) -> list[types.Diagnostic]:
        # With related places: train.py's job made before the workspace's first scan ends runs
        # it alone, knowing no file for Net; it runs again once the scan ends (session.py
        # `driver_confirmed`), and its error then points into model.py.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = [d for d in client.diagnostics.get(uri, [])
                     if str(d.code).startswith("TL2") and d.related_information]
            if found:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"no shape diagnostics with related places for {uri}")

    in_model = (await shape_diagnostics(model_uri))[0]
    assert in_model.range.start.line == fc1_line
    assert "400" in in_model.message and "256" in in_model.message
    assert [(r.location.uri, r.location.range.start.line) for r in in_model.related_information] == [
        (train_uri, call_line)]
    in_train = (await shape_diagnostics(train_uri))[0]
    assert in_train.range.start.line == call_line
    assert [(r.location.uri, r.location.range.start.line) for r in in_train.related_information] == [
        (model_uri, fc1_line)]
    # CPU agrees that this model cannot take the 16x5x5 features train.py's images give.
    import torch

    namespace: dict = {}
    exec(compile(broken, "model.py", "exec"), namespace)
    for batch in (64, 1000):
        with pytest.raises(RuntimeError, match="400"):
            namespace["Net"]()(torch.randn(batch, 3, 32, 32))


async def test_a_package_module_runs_through_its_package_driver(client):
    layers = client.root / "pkgs/visionpkg/layers.py"
    text = layers.read_text()
    uri = layers.as_uri()
    open_text(client, uri, text)
    pooled = line_of(text, "pooled = F.max_pool2d(x, 2)")
    report = await report_where(client, uri, lambda r: shapes_at(r, pooled, "pooled"))
    # train.py (relative and absolute package imports) calls ConvBlock directly and through
    # TinyConvNet's two blocks.
    assert shapes_at(report, pooled, "pooled") == [[4, 8, 16, 16], [4, 16, 16, 16], [4, 32, 8, 8]]
    assert report["origin"]["path"] == str(client.root / "pkgs/visionpkg/train.py")
    import torch

    namespace: dict = {}
    exec(compile(text, str(layers), "exec"), namespace)
    block = namespace["ConvBlock"](3, 8)
    assert [tuple(block(torch.randn(n, 3, 32, 32)).shape) for n in (4, 2)] == [(4, 8, 16, 16), (2, 8, 16, 16)]


async def test_why_no_shapes_and_a_driver_changed_on_disk(client_without_synthesis):
    client = client_without_synthesis
    model, train = client.root / "model.py", client.root / "train.py"
    model_uri = model.as_uri()
    text = model.read_text()
    class_line = line_of(text, "class Net(nn.Module):")
    logits = line_of(text, "logits = self.fc3(x)")
    # The driver reads a data file that is not there before it builds the model.
    train.write_text('words = open("data/corpus.txt").read().split()\n' + train.read_text())
    open_text(client, model_uri, text)
    report = await report_where(client, model_uri, lambda r: any(n["kind"] == "why" for n in r["notes"]))
    why = next(n for n in report["notes"] if n["kind"] == "why")
    assert why["line"] == class_line
    assert why["message"].startswith("Net.forward has no shapes: train.py, which calls it, stopped before it ran")
    assert "data/corpus.txt" in why["message"] and "# torch-lsp: input x=[...]" in why["message"]
    assert "(synthesized calls are off: `execution.synthesize`)" in why["message"]
    assert why["message"] in await hover(client, model_uri, class_line, 7)
    # Typing in model.py: the driver is not run again until it changes (model.py runs on its
    # own), and the note still says why.
    replace_text(client, model_uri, text + "\n# typing\n", version=2)
    first_hash = report["plan_hash"]
    report = await report_where(client, model_uri, lambda r: r["plan_hash"] not in ("", first_hash))
    assert next(n for n in report["notes"] if n["kind"] == "why")["message"] == why["message"]

    # The data problem is fixed on disk (another tool, a git checkout): the watcher tells us.
    train.write_text(train.read_text().split("\n", 1)[1])
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(
        changes=[types.FileEvent(uri=train.as_uri(), type=types.FileChangeType.Changed)]))
    report = await report_where(client, model_uri, lambda r: shapes_at(r, logits, "logits"))
    assert not any(n["kind"] == "why" for n in report["notes"])


async def test_an_unsaved_buffer_that_starts_calling_the_model_becomes_its_driver(client_without_synthesis):
    client = client_without_synthesis
    model, train = client.root / "model.py", client.root / "train.py"
    text, calling = model.read_text(), train.read_text()
    logits = line_of(text, "logits = self.fc3(x)")
    # On disk nothing calls Net any more (the watcher tells the server): model.py has no driver.
    train.write_text("import torch\n\nprint(torch.zeros(2))\n")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(
        changes=[types.FileEvent(uri=train.as_uri(), type=types.FileChangeType.Changed)]))
    open_text(client, model.as_uri(), text)
    report = await report_where(client, model.as_uri(), lambda r: any(n["kind"] == "why" for n in r["notes"]))
    assert not shapes_at(report, logits, "logits")
    # The editor's train.py calls it again, unsaved: model.py is run again, through it (model.py's
    # last job did not run train.py; the index says train.py now calls its class).
    open_text(client, train.as_uri(), calling)
    report = await report_where(client, model.as_uri(), lambda r: shapes_at(r, logits, "logits"))
    expected = cpu_net_shapes(model, [64, 1000])
    assert shapes_at(report, logits, "logits") == [list(expected[64]["logits"]), list(expected[1000]["logits"])]
    assert report["origin"]["kind"] == "driver" and report["origin"]["path"] == str(train)
    assert not any(n["kind"] == "why" for n in report["notes"])


SELF_RUNNING = """import torch
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        y = self.fc(x)
        return y


net = Tiny()
out = net(torch.randn(3, 12))
"""


async def test_shapes_come_before_the_first_scan_ends(held_scan_client):
    """While the workspace's first scan runs (held here): a file that runs every module class it
    defines gets its shapes (its driver is itself whatever other files hold), and so does
    model.py, from train.py, found among the files that import its classes; closing a tab does
    not stop the server. Once the scan ends, the whole index confirms train.py: no second job."""
    client = held_scan_client
    script, model = client.root / "tiny.py", client.root / "model.py"
    script.write_text(SELF_RUNNING)
    open_text(client, model.as_uri(), model.read_text())
    open_text(client, script.as_uri(), SELF_RUNNING)
    y = line_of(SELF_RUNNING, "y = self.fc(x)")
    report = await report_where(client, script.as_uri(), lambda r: shapes_at(r, y, "y"))
    import torch

    namespace: dict = {}
    exec(compile(SELF_RUNNING, str(script), "exec"), namespace)
    assert shapes_at(report, y, "y") == [list(namespace["net"].fc(torch.randn(3, 12)).shape)]
    logits = line_of(model.read_text(), "logits = self.fc3(x)")
    report = await report_where(client, model.as_uri(), lambda r: shapes_at(r, logits, "logits"))
    expected = cpu_net_shapes(model, [64, 1000])
    assert shapes_at(report, logits, "logits") == [list(expected[64]["logits"]), list(expected[1000]["logits"])]
    assert report["origin"]["path"] == str(client.root / "train.py")
    assert not (client.root / held_scan_server.GATE).exists()  # still scanning
    # A tab closed during the scan: the server notes it and answers the next request at once
    # (it used to wait on the event loop for the scan's lock).
    client.text_document_did_close(types.DidCloseTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=script.as_uri())))
    info = await asyncio.wait_for(client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[])), 30)
    jobs = info["shapeJobs"]
    (client.root / held_scan_server.GATE).write_text("")
    # A new document's job waits for nothing once the scan is done: when it has shapes, model.py's
    # confirmation (which waited for the scan's end) has had its turn.
    script.write_text(SELF_RUNNING)
    open_text(client, script.as_uri(), SELF_RUNNING)
    await report_where(client, script.as_uri(), lambda r: shapes_at(r, y, "y"))
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))
    assert info["shapeJobs"] == jobs + 1  # tiny.py's; model.py ran once


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[
        sys.executable, str(Path(__file__).with_name("held_scan_server.py")), "--search-misses"]))
async def search_misses_client(lsp_client: LanguageClient, tmp_path):
    """The held-scan server whose text search for the files importing a class finds none."""
    yield await _start(lsp_client, tmp_path, {"synthesize": False})
    await lsp_client.shutdown_session()


async def test_a_driver_chosen_before_the_scan_ends_is_corrected_after_it(search_misses_client):
    """The search misses train.py (as for a class reached through a name built at run time): the
    job before the scan ends runs model.py itself; when the scan ends, the whole index chooses
    train.py and the server runs model.py again, now with train.py's shapes."""
    client = search_misses_client
    model = client.root / "model.py"
    open_text(client, model.as_uri(), model.read_text())
    first = await report_where(client, model.as_uri(), lambda r: r.get("origin") is not None or r.get("stopped"))
    assert (first.get("origin") or {}).get("path") != str(client.root / "train.py")
    assert not (client.root / held_scan_server.GATE).exists()
    (client.root / held_scan_server.GATE).write_text("")
    logits = line_of(model.read_text(), "logits = self.fc3(x)")
    report = await report_where(client, model.as_uri(), lambda r: shapes_at(r, logits, "logits")
                                and r["origin"]["path"] == str(client.root / "train.py"))
    expected = cpu_net_shapes(model, [64, 1000])
    assert shapes_at(report, logits, "logits") == [list(expected[64]["logits"]), list(expected[1000]["logits"])]


async def test_a_driver_that_stops_leaves_the_model_to_a_synthesized_call(client):
    model, train = client.root / "model.py", client.root / "train.py"
    text = model.read_text()
    logits = line_of(text, "logits = self.fc3(x)")
    train.write_text('words = open("data/corpus.txt").read().split()\n' + train.read_text())
    open_text(client, model.as_uri(), text)
    report = await report_where(client, model.as_uri(), lambda r: shapes_at(r, logits, "logits"))
    assert not any(n["kind"] == "why" for n in report["notes"])
    assert "train.py:1: `data/corpus.txt` does not exist here: shapes stop at this line" in [
        n["message"] for n in report["notes"]]
    batch = shapes_at(report, logits, "logits")[0][0]
    expected = cpu_net_shapes(model, [batch, 7])
    assert shapes_at(report, logits, "logits") == [list(expected[batch]["logits"])]
    assert expected[7]["logits"] == (7, 10)
    # The hover on the class says where the shapes came from, and not that nothing calls Net.
    on_class = await hover(client, model.as_uri(), line_of(text, "class Net(nn.Module):"), 7)
    assert "`Net()` with synthesized inputs (no script's run reached this class):" in on_class


def cpu_shapes(source: Path, build: str, sizes: list[tuple]) -> list[list[int]]:
    """`build` (an expression over the file's names) run on CPU on a random input of each size."""
    import torch

    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    model = eval(build, namespace)
    return [list(model(torch.randn(*size)).shape) for size in sizes]


async def opened_until_shaped(client: LanguageClient, relative: str, source_line: str, name: str):
    """Open a workspace file and wait until `name` has shapes on the line holding `source_line`:
    (path, text, uri, that line, the report)."""
    script = client.root / relative
    text, uri = script.read_text(), script.as_uri()
    open_text(client, uri, text)
    line = line_of(text, source_line)
    report = await report_where(client, uri, lambda r: shapes_at(r, line, name))
    return script, text, uri, line, report


async def test_a_ddp_script_gets_shapes_and_no_false_finding(scripts_client):
    client = scripts_client
    script, text, uri, predictions, report = await opened_until_shaped(
        client, "ddp/train_ddp.py", "predictions = ddp_model(inputs)", "predictions")
    # It needs 2 GPUs and torchrun; it ran on meta in a one-process fake group, with its own
    # batch size (256 samples, one replica, batches of 32).
    assert shapes_at(report, predictions, "predictions") == [cpu_shapes(script, "Regressor()", [(32, 10)])[0]]
    assert cpu_shapes(script, "Regressor()", [(5, 10)]) == [[5, 1]]
    assert report["errors"] == [] and report["stopped"] is None
    # The shape report is published with the diagnostics, before the command's answer.
    assert uri in client.diagnostics
    assert [d.code for d in client.diagnostics.get(uri, []) if str(d.code).startswith("TL2")] == []
    said = await hover(client, uri, line_of(text, 'dist.init_process_group("nccl")'), 8)
    assert "no launcher here: joined a single-process fake process group (rank 0 of 1)" in said


async def test_required_options_are_filled_in_and_said_in_the_hover(scripts_client):
    client = scripts_client
    script, text, uri, scores, report = await opened_until_shaped(client, "cli/train.py", "scores = model(batch)", "scores")
    # --features 32 --size small (hidden 32), --classes and --batch-size from their defaults.
    assert shapes_at(report, scores, "scores") == cpu_shapes(script, "Classifier(32, 32, 5)", [(16, 32)])
    assert cpu_shapes(script, "Classifier(32, 32, 5)", [(3, 32)]) == [[3, 5]]
    said = await hover(client, uri, line_of(text, "return parser.parse_args()"), 12)
    assert "required options were not given; ran with `--data-dir data_dir --features 32 --size small`" in said
