"""Why a forward has no shapes (shapes/why.py): one sentence per forward, and what to do."""

from __future__ import annotations

import shutil

from torch_lsp.analysis.drivers import CallSite, RunSpec
from torch_lsp.shapes.report import Note, Range, ShapeError, ShapeReport, Value, VariableShapes
from torch_lsp.shapes.why import Forward, explain

NET = Forward("Net", class_line=3, line=8, end_line=12, parameter="images")
HEAD = Forward("Head", class_line=14, line=16, end_line=18, parameter=None)


def spec(driver: str = "/p/train.py", reached=("model.Net", "model.Head"), unreached=()) -> RunSpec:
    return RunSpec(document="/p/model.py", driver=driver, module=None, package=None, roots=(), cwd="/p",
                   workspace_root="/p", call_sites=(CallSite(driver, 24, "model.Net", "call"),),
                   reached=tuple(reached), unreached=tuple(unreached))


def tensor_at(line: int) -> VariableShapes:
    return VariableShapes("x", line, line, [Value("tensor", (2, 3))])


def why_notes(report: ShapeReport) -> list[Note]:
    return [n for n in report.notes if n.kind == "why"]


def test_a_forward_with_shapes_or_an_error_gets_no_note():
    report = ShapeReport(path="/p/model.py", variables=[tensor_at(9)],
                         errors=[ShapeError("TL201", "fc1 expects 400 features", Range(17, 4, 17, 20))])
    explain("/p/model.py", {"/p/model.py": report}, spec(), [NET, HEAD])
    assert why_notes(report) == []


def test_parameters_on_the_def_line_are_not_shapes_of_the_body():
    report = ShapeReport(path="/p/model.py", variables=[tensor_at(8)])
    explain("/p/model.py", {"/p/model.py": report}, spec(), [NET])
    assert why_notes(report)[0].message.startswith("Net.forward has no shapes: train.py, which calls it, ran to the end")


def test_the_driver_stopped_and_the_synthesized_call_failed():
    report = ShapeReport(path="/p/model.py", notes=[Note("Net: no call was synthesized: out of time", 3)])
    driver = ShapeReport(path="/p/train.py", stopped="stopped at line 3: FileNotFoundError: 'data.csv'")
    explain("/p/model.py", {"/p/model.py": report, "/p/train.py": driver}, spec(), [NET])
    assert report.notes == [Note(
        "Net.forward has no shapes: train.py, which calls it, stopped before it ran (stopped at line 3: "
        "FileNotFoundError: 'data.csv'), and the synthesized call did not work (no call was synthesized: out of "
        "time). To see them, state its input with `# torch-lsp: input images=[...]` on its `def forward` line "
        "(code action on the class: *State the input of Net*).", 3, "why")]


def test_nothing_calls_it_and_synthesis_is_off():
    report = ShapeReport(path="/p/model.py")
    explain("/p/model.py", {"/p/model.py": report}, spec("/p/model.py", reached=(), unreached=("model.Head",)),
            [HEAD], synthesize=False)
    assert why_notes(report)[0].message == (
        "Head.forward has no shapes: nothing in the workspace constructs and calls Head (synthesized calls are off: "
        "`execution.synthesize`). To see them, state its input with `# torch-lsp: input x=[...]` on its "
        "`def forward` line (code action on the class: *State the input of Head*).")
    assert why_notes(report)[0].line == 14


def test_the_drivers_stand_ins_are_said_in_the_document_once():
    report = ShapeReport(path="/p/model.py", variables=[tensor_at(9)])
    driver = ShapeReport(path="/p/train.py", notes=[Note("CIFAR10 replaced by FakeData", 10, "stand-in"),
                                                    Note("something else", 2, "info")])
    reports = {"/p/model.py": report, "/p/train.py": driver}
    explain("/p/model.py", reports, spec(), [NET])
    explain("/p/model.py", reports, spec(), [NET])
    assert report.notes == [Note("train.py:11: CIFAR10 replaced by FakeData", None, "stand-in")]


class StoppingDriverEngine:
    """A worker stand-in: the driver (train.py) stops before it builds the model, and the
    document run on its own defines its classes and calls nothing, so no forward gets shapes.
    Like the real engine's cache, the same job gives the same report objects again."""

    at_once = 1

    def __init__(self, interpreter) -> None:
        self.interpreter = interpreter
        self.cache: dict = {}

    async def run(self, spec, first: bool = False):
        key = (spec.main.filename, spec.main.source, tuple(p.class_name for p in spec.probes))
        if key not in self.cache:
            stopped = "line 1: FileNotFoundError" if spec.main.filename.endswith("train.py") else None
            self.cache[key] = {spec.main.filename: ShapeReport(path=spec.main.filename, stopped=stopped)}
        return self.cache[key]

    def cancel(self, key: str) -> None:
        pass


async def test_the_reasons_stay_shown_while_a_run_is_pending(tmp_path):
    # The editor shows the driver's reports first, then the final ones. With synthesized calls
    # off nothing can still give the forward shapes: the first reports say why already. With them
    # on, the first reports of a run keep the last run's reason until this run's is known. The
    # note blinked out of the hover for the time of every run (and a client that read the first
    # report saw none: CI's failure of test_why_no_shapes_and_a_driver_changed_on_disk).
    from tests.conftest import FIXTURES
    from torch_lsp.config import Settings
    from torch_lsp.shapes.session import RunRequest, ShapeSession

    shutil.copytree(FIXTURES / "projects" / "model_train", tmp_path, dirs_exist_ok=True)
    model = tmp_path / "model.py"
    for synthesize in (False, True):
        settings = Settings()
        settings.execution.synthesize = synthesize
        session = ShapeSession(tmp_path, lambda: settings, engine_factory=StoppingDriverEngine)
        shown, final = [], []  # the notes as the editor got them (the reports are completed in place)
        for _ in range(2):
            reports = await session.analyse(RunRequest(str(model), model.read_text(), key="model"),
                                            on_driver=lambda first: shown.append(why_notes(first[str(model)])))
            final.append(why_notes(reports[str(model)]))
        assert [[n.message.split(":")[0] for n in notes] for notes in final] == [["Net.forward has no shapes"]] * 2
        assert shown == ([final[0]] * 2 if not synthesize else [[], final[0]])
        assert final[0] == final[1]
        # A closed document's reasons are not kept (nor in the cached reports they were shown with).
        session.cancel("model")
        await session.analyse(RunRequest(str(model), model.read_text(), key="model"),
                              on_driver=lambda first: shown.append(why_notes(first[str(model)])))
        assert shown[-1] == (final[0] if not synthesize else [])
