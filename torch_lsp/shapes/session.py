"""The one door to the shape engine: a document (path + text) in, one ShapeReport per file out.

The server (server/shapes.py), the CLI (`torch-lsp shapes | summary | check`) and notebooks all
go through `ShapeSession.analyse`, so settings, interpreter, project layout and the choice of
what runs are decided in one place:

1. `job_spec()` — what runs for this document: its *driver* (analysis/drivers.py: the document
   itself, or the workspace file that constructs and calls its classes best, found in the
   workspace index), with the driver's package context (`project.py`), its project's roots on
   `sys.path`, the editor's unsaved buffers as an overlay. Recorded: the document, the driver,
   and the files defining the classes the driver runs (an error inside them is reported there,
   with related information pointing at the call);
2. the engine runs it in the worker (shapes/engine.py) and returns a report per recorded file;
3. the classes of the document that the driver did not reach get synthesized calls in
   background jobs of their own (shapes/probe_jobs.py, `probe_spec()`), merged into the
   reports. The server shows the driver's reports first (`on_driver`), the merged ones after;
4. `why.explain` adds to the document's report why a forward has no shapes, and what the
   driver stood in for.

No torch here (server process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torch_lsp.analysis.drivers import RunSpec, choose_driver, choose_driver_alone
from torch_lsp.analysis.nearby import possible_runners, search_key
from torch_lsp.analysis.plan import ExecutionPlan, build_plan
from torch_lsp.analysis.project import workspace_root
from torch_lsp.analysis.workspace import FileSelection, WorkspaceIndex
from torch_lsp.shapes import batch_dims, probe_jobs, project, scan_process, why
from torch_lsp.shapes.engine import JobSettings, ShapeEngine
from torch_lsp.shapes.interpreter import Interpreter, find_interpreter
from torch_lsp.shapes.report import ShapeReport
from torch_lsp.shapes.spec import JobSpec, Probe
from torch_lsp.yield_points import yield_point

if TYPE_CHECKING:
    from torch_lsp.analysis.syntax import ParsedModule

Reports = dict[str, ShapeReport]
# Files recorded besides the document and its driver: where the driver's classes are defined.
MAX_CLASS_FILES = 8
MAX_PREPARED = 8  # documents whose analysed version's plan is kept (`ShapeSession.prepare`)
INTERPRETER_RECHECK_S = 5.0  # how stale the project interpreter's lookup may be (see interpreter())


@dataclass
class RunRequest:
    """One document to analyse, as the caller knows it."""

    path: str  # absolute path (a virtual one for notebooks and unsaved buffers)
    text: str
    key: str | None = None  # defaults to the path
    open_documents: Mapping[str, str] = field(default_factory=dict)  # path -> editor text
    observers: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    on_screen: bool = False  # the editor shows the document: its jobs go ahead of others' (server/on_screen.py)


def _on_its_own(run: RunSpec) -> RunSpec:
    """The same document run by itself (its driver could not be used)."""
    return RunSpec(document=run.document, driver=run.document, module=None, package=None, roots=(),
                   cwd=os.path.dirname(run.document), workspace_root=run.workspace_root,
                   unreached=run.reached + run.unreached)


def _text_of(path: str, request: RunRequest) -> str | None:
    """A file's text as this request sees it: the editor's buffer, else the disk."""
    text = request.open_documents.get(path)
    if text is not None:
        return text
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError):
        return None


def _read(path: str) -> str | None:
    """A workspace file's text as the index reads it (undecodable bytes replaced)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return None


class _WorkspaceTexts(Mapping):
    """The Python files a scan of the index's root would index, as path -> text: the editor's
    texts first, else the disk's, read each time one is asked. The search reads every file once
    per round; holding them all would cost the server ~20 KB a file (100 MB at the scan's cap)."""

    def __init__(self, index: WorkspaceIndex, opened: dict[str, str]) -> None:
        self._opened = opened
        self._paths = dict.fromkeys(opened)
        for path in FileSelection(index.root, index.limits):
            self._paths[str(Path(path).resolve())] = None

    def __getitem__(self, path: str) -> str:
        if path in self._opened:
            return self._opened[path]
        if path not in self._paths:
            raise KeyError(path)
        return _read(path) or ""  # unreadable now: nothing in it

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _script_settings(settings) -> dict:
    """`argv` and `env` for the driver, from `[tool.torch-lsp.shapes]` when configured."""
    shapes = getattr(settings, "shapes", None)
    return {"argv": list(getattr(shapes, "argv", None) or []), "env": dict(getattr(shapes, "env", None) or {})}


def synthesis_on(settings) -> bool:
    """`execution.synthesize`: whether classes no driver reaches get synthesized calls."""
    return getattr(getattr(settings, "execution", None), "synthesize", True)


def probes_for(path: str, text: str, settings=None, root: str | Path | None = None,
               prepared: list[dict] | None = None) -> list[Probe]:
    """Synthesized calls for the document's module classes (the worker skips those a driver
    ran); `execution.synthesize` off: none. `root`: the workspace, whose argparse defaults
    the constructors may need (`build_backbone(args)`). `prepared`: the text's probe hints
    without those defaults (`ShapeSession.prepare`), else the text is parsed here."""
    from torch_lsp.analysis.probes import probe_hints, workspace_argparse_defaults
    from torch_lsp.analysis.syntax import ParsedModule, parse

    if not synthesis_on(settings):
        return []
    defaults = workspace_argparse_defaults(str(root), path) if root is not None else {}
    if prepared is None:
        parsed = parse(text)
        if not isinstance(parsed, ParsedModule):
            return []
        hints = probe_hints(parsed, _stated_inputs(settings), defaults)
    else:  # the file's own argparse defaults win over the workspace's, as in probe_hints
        hints = [{**p, "hints": {**p["hints"], "argparse": {**defaults, **p["hints"]["argparse"]}}} for p in prepared]
    return [Probe(path, p["class_name"], p["line"], p["hints"]) for p in hints]


def _stated_inputs(settings) -> dict | None:
    """`shapes.inputs`: the inputs the user stated per class, in the settings."""
    return getattr(getattr(settings, "shapes", None), "inputs", None)


@dataclass(frozen=True)
class _Prepared:
    """One version's plan and probe hints, made from its static analysis's parse (`prepare`)."""

    text: str
    plan: ExecutionPlan
    hints: list[dict] | None  # probe_hints without the workspace's argparse defaults; None: synthesis off
    inputs: dict | None  # the `shapes.inputs` setting the hints were made with


@dataclass(frozen=True)
class _EarlyJob:
    """A document's job made before the first scan ended, for the whole index to confirm
    (`driver_confirmed`): the driver it took from the files that may import its classes, if it
    did, and the files it recorded (a script run alone records only itself, where the index
    knows the files defining the classes it runs)."""

    nearby_driver: RunSpec | None
    recorded: frozenset[str] | None  # None: the job was not made (a message instead)


class ShapeSession:
    """Owns exactly one engine (worker) for a workspace and the settings it runs under."""

    def __init__(self, root: Path | None, settings_provider: Callable[[], object],
                 engine_factory: Callable[[Interpreter], ShapeEngine] = ShapeEngine,
                 provisional_drivers: bool = False) -> None:
        self.root = Path(root).resolve() if root is not None else None
        # Before the first scan ends, may a job's driver come from the files that may import the
        # document's classes (`_spec_before_scan`)? Only for a caller that then asks whether the
        # whole index agrees (`driver_confirmed`) and runs the job again when not: the server.
        self.provisional_drivers = provisional_drivers
        self.settings_provider = settings_provider
        self.engine_factory = engine_factory
        self._engine: ShapeEngine | None = None
        self._closed = False  # closed sessions start no worker (a start may still be queued)
        # The workspace index (classes, constructions, calls across files), built on first use
        # and kept current by `text_changed`; job_spec runs in executor threads, hence the lock.
        self._index: WorkspaceIndex | None = None
        self._indexed: dict[str, int] = {}  # path -> hash of the text the index holds
        self._scanned = False  # the first scan is done (it holds the lock for seconds on a large workspace)
        # path -> the newest text the index should hold (None: the disk's), noted in the order
        # the editor said it and indexed later by whichever thread comes (`index_changes`).
        self._pending: dict[str, str | None] = {}
        # document key -> the index of fewer files its last job chose its driver with, before the
        # first scan ended (`_spec_before_scan`): its why-notes read the same index.
        self._alone: dict[str, WorkspaceIndex] = {}
        # document key -> its last job, made before the first scan ended (`_spec_before_scan`),
        # until the whole index confirms it (`driver_confirmed`).
        self._early: dict[str, _EarlyJob] = {}
        # resolved path -> (its names and imports, the files found to import them) while the
        # first scan runs (`_nearby_index`)
        self._found_nearby: dict[str, tuple[tuple, set[str] | None]] = {}
        self._scan_started = False
        self._scan_done: concurrent.futures.Future = concurrent.futures.Future()  # any thread, any loop awaits it
        self._index_lock = threading.RLock()
        self.runs: dict[str, RunSpec] = {}  # the last run spec per job key
        # document -> (driver, hash of the driver's text, why it stopped) for drivers whose run
        # never reached the document: until that text changes, the document runs on its own.
        self._missed_drivers: dict[str, tuple[str, int, str | None]] = {}
        self._probe_keys: dict[str, set[str]] = {}  # document key -> its probe jobs' keys
        self._prepared: dict[str, _Prepared] = {}  # path -> its latest analysed version's (`prepare`)
        self._prepared_lock = threading.Lock()
        self._reasons: dict[str, dict[str, str]] = {}  # document key -> class -> its last why-note
        self._names = batch_dims.LastNames()  # each document's last batch-dimension names
        self._interpreter_found: tuple[str | None, float, Interpreter] | None = None  # setting, when, what
        # Called with the key of the driver job the worker starts next (ShapeEngine.on_next).
        self.on_next_job: Callable[[str], None] | None = None

    # the engine -------------------------------------------------------------------------------

    def interpreter(self) -> Interpreter:
        """The project's interpreter for the current setting. Looked for again when the setting
        changes, or when the last look is INTERPRETER_RECHECK_S old (a `.venv` made meanwhile):
        not for every job, whose `stat`s on the event loop each give up the GIL."""
        python = getattr(self.settings_provider().execution, "python", None)
        now = time.monotonic()
        found = self._interpreter_found
        if found is None or found[0] != python or now - found[1] > INTERPRETER_RECHECK_S:
            found = self._interpreter_found = (python, now, find_interpreter(python, self.root))
        return found[2]

    @property
    def engine(self) -> ShapeEngine:
        """The one worker of this session, (re)created when the interpreter setting changes."""
        interpreter = self.interpreter()
        if self._engine is not None and self._engine.interpreter != interpreter:
            self._engine.terminate()
            self._engine = None
        if self._engine is None:
            self._engine = self.engine_factory(interpreter)
            self._engine.on_next = self._next_job
        return self._engine

    def _next_job(self, key: str) -> None:
        if self.on_next_job is not None:
            self.on_next_job(key)

    @property
    def started(self) -> bool:
        return self._engine is not None

    async def start(self) -> None:
        if not self._closed:
            await self.engine.start()

    async def close(self) -> None:
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.close()

    def terminate(self) -> None:
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.terminate()

    # the workspace index ----------------------------------------------------------------------

    def index(self, near: str | None = None) -> WorkspaceIndex:
        """The workspace index, scanned on first use (bounded: see analysis/workspace.py)."""
        self._scan_started = True
        with self._index_lock:
            if self._index is None:
                root = self.root or (workspace_root(near) if near else Path.cwd())
                self._index = WorkspaceIndex(root)
                try:
                    scan_process.scan(self._index)  # a large workspace: in a child process
                    self._index_pending()
                finally:  # a failed scan leaves what it indexed; nobody waits for it forever
                    self._scanned = True
                    self._alone.clear()  # jobs choose with the workspace's index from now on
                    self._found_nearby.clear()
                    self._scan_done.set_result(None)
            return self._index

    async def scanned(self, near: str | None = None) -> None:
        """Wait for the first scan on the event loop, not in a thread of the shared pool: it
        holds the index for seconds on a large workspace, and job specs waiting for it there
        (one per opened document) took every thread: static analyses and code actions queued
        behind them until the scan ended (bench/bench_first_scan.py)."""
        if self._scan_done.done():
            return
        if not self._scan_started:  # nobody scans yet (the server starts it with its settings)
            self._scan_started = True
            asyncio.get_running_loop().run_in_executor(None, self.index, near)
        await asyncio.wrap_future(self._scan_done)

    def text_changed(self, path: str, text: str | None) -> None:
        """Note the text the index is to hold for `path`: an open document's analysed text, or
        None for the disk's (a buffer closed, a file changed on disk). Takes no lock: the event
        loop calls it as the editor's messages come, so that the newest note wins whichever
        thread indexes it (`index_changes`); the first scan holds the index for seconds."""
        self._pending[path] = text

    def index_changes(self, path: str | None = None) -> set[str]:
        """Index the noted texts (a thread of the pool: it takes the index's lock). During the
        first scan it returns at once and they wait for the scan's end (or the next job): six
        threads waiting for a scan left none for commands. Returns, for `path`, the files
        whose documents may now get another driver (`buffer_changed`)."""
        if not self._scanned:
            return set()
        with self._index_lock:
            return self._index_pending(path)

    def _index_pending(self, path: str | None = None) -> set[str]:
        """Index the noted texts (lock held); for `path`, what `index_changes` returns."""
        concerned: set[str] = set()
        while self._pending:
            noted, text = self._pending.popitem()
            if text is None:
                self._reread(noted)
            elif self._update(noted, text) and noted == path:
                concerned = {use.cls.path for use in self._index.uses_in(noted)} - {str(Path(noted).resolve())}
        return concerned

    def _reread(self, path: str) -> None:
        """The disk's text counts again: read it; a deleted file leaves the index."""
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            self._index.remove(path)
            self._indexed.pop(path, None)
            return
        self._update(path, text, buffer=False)

    def _update(self, path: str, text: str, buffer: bool = True) -> bool:
        """Index `text` as `path`'s (an open document's, unless `buffer` is False: the disk's);
        True when what other files see of it changed."""
        digest = hash(text)
        if buffer and self._indexed.get(path) == digest:
            return False  # (the disk's text is indexed again: a closed buffer's statements go)
        changed = self._index.update(path, text, buffer)
        self._indexed[path] = digest
        return changed

    def buffer_changed(self, path: str, text: str) -> set[str]:
        """An open document's analysed text, indexed for every job's choice of driver (the
        server notes it on the event loop and indexes it in the pool: `text_changed`,
        `index_changes`). Returns the files whose documents may now get another driver,
        besides those whose last job ran `path` (the server re-runs both): where the classes it
        runs are defined, when what other files see of it changed (a new call of a class of
        theirs makes it their driver)."""
        self.text_changed(path, text)
        return self.index_changes(path)

    def file_changed(self, path: str) -> None:
        """A file changed on disk or a buffer was closed: the disk's text counts again."""
        self.text_changed(path, None)
        self.index_changes()

    def run_for(self, request: RunRequest) -> RunSpec:
        """Which file runs for this document, with its text indexed. The other open documents
        were indexed when they were analysed (`buffer_changed`): indexing every open buffer
        for every job made each job's cost grow with the number of open documents (30 typed
        into at once: most of the server's time went there)."""
        index = self.index(request.path)
        with self._index_lock:
            self._index_pending()
            self._update(request.path, request.text)
            return choose_driver(index, request.path)

    # jobs -------------------------------------------------------------------------------------

    async def spec_for(self, request: RunRequest) -> JobSpec | str:
        """`job_spec`, in the shared pool once the first scan is done; before, when an index of
        fewer files can choose the document's driver (`_spec_before_scan`)."""
        loop = asyncio.get_running_loop()
        if not self._scan_done.done():
            spec = await loop.run_in_executor(None, self._spec_before_scan, request)
            if spec is not None:
                return spec
        await self.scanned(request.path)
        self._early.pop(request.key or request.path, None)  # this job is the index's
        return await loop.run_in_executor(None, self.job_spec, request)

    def _spec_before_scan(self, request: RunRequest) -> JobSpec | str | None:
        """The job spec while the first scan runs (~10 s for 1,500 files), from an index of
        fewer files. The document alone, when no other file could change its choice of driver
        (analysis/drivers.py, `choose_driver_alone`: a script, or a file that runs every module
        class it defines). Else, with `provisional_drivers`, the document and the files that
        may import its classes (analysis/nearby.py): the scan's end confirms that choice
        (`driver_confirmed`). None: the job waits for the scan."""
        key = request.key or request.path
        root = self.root or workspace_root(request.path)
        index = WorkspaceIndex(root)
        index.update(request.path, request.text)
        run = choose_driver_alone(index, request.path)
        self._early.pop(key, None)
        nearby_driver = None
        if run is None and self.provisional_drivers and request.path.endswith(".py"):
            index = self._nearby_index(index, request)
            run = nearby_driver = choose_driver(index, request.path) if index is not None else None
        if run is None:
            return None
        self._alone[key] = index
        spec = self.job_spec(request, (run, index))
        self._early[key] = _EarlyJob(nearby_driver, frozenset(spec.record) if isinstance(spec, JobSpec) else None)
        return spec

    def _nearby_index(self, alone: WorkspaceIndex, request: RunRequest) -> WorkspaceIndex | None:
        """An index of the document and the workspace files that may import its classes (read
        and searched, not parsed: ~0.5 s for 1,500 files where the scan takes ~10 s); None when
        its names are in too many files. The files found are kept for the document's next jobs
        while its names and imports stay the same (typing during the scan)."""
        document = str(Path(request.path).resolve())
        opened = {str(Path(path).resolve()): text for path, text in request.open_documents.items()}
        opened[document] = request.text
        key = search_key(request.text)
        known = self._found_nearby.get(document)
        if known is not None and known[0] == key:
            found = known[1]
        else:
            found = possible_runners(document, _WorkspaceTexts(alone, opened))
            self._found_nearby[document] = (key, found)
        if found is None:
            return None
        for path in found - {document}:
            text = opened[path] if path in opened else _read(path)
            if text is not None:
                alone.update(path, text)
        return alone

    def chose_before_scan(self, key: str) -> bool:
        """Was the document's last job made before the first scan ended, with the whole index yet
        to confirm it (`driver_confirmed`)?"""
        return key in self._early

    async def driver_confirmed(self, request: RunRequest) -> bool:
        """Once the first scan is done: does the whole index make the job that the document's
        last job, made before the scan ended, was? The same driver as the files that may import
        its classes gave, and the same files recorded: a script run alone recorded only itself,
        where the index knows the files defining the classes it runs (their errors then point
        to them). True when there is nothing to confirm; False: the caller runs the document
        again (its job spec is the index's now)."""
        key = request.key or request.path
        early = self._early.get(key)
        if early is None:
            return True
        await self.scanned(request.path)
        loop = asyncio.get_running_loop()
        same = True
        if early.nearby_driver is not None:
            same = await loop.run_in_executor(None, self.run_for, request) == early.nearby_driver
        if same and early.recorded is not None:
            spec = await loop.run_in_executor(None, self.job_spec, request)
            same = not isinstance(spec, JobSpec) or frozenset(spec.record) == early.recorded
        if self._early.get(key) is early:
            del self._early[key]
        return same

    def prepare(self, path: str, text: str, parsed: ParsedModule) -> None:
        """Called in a large document's static analysis (server/shapes.py), while the analysis's
        own parse of `text` is valid (analysis/incremental.py moves its nodes for the next
        version): the plan and probe hints of this version from that parse, so that its job
        parses nothing (a parse and node index of a 5,000-line file: ~140 ms of CPU)."""
        from torch_lsp.analysis.probes import probe_hints

        settings = self.settings_provider()
        inputs = _stated_inputs(settings)
        prepared = _Prepared(text, build_plan(text, path, parsed),
                             probe_hints(parsed, inputs, {}) if synthesis_on(settings) else None, inputs)
        with self._prepared_lock:
            self._prepared.pop(path, None)
            self._prepared[path] = prepared
            if len(self._prepared) > MAX_PREPARED:
                del self._prepared[next(iter(self._prepared))]

    def _prepared_for(self, request: RunRequest) -> _Prepared | None:
        """What `prepare` made for this request's text, with the settings it has now."""
        with self._prepared_lock:
            prepared = self._prepared.get(request.path)
        if prepared is None or prepared.text != request.text \
                or prepared.inputs != _stated_inputs(self.settings_provider()):
            return None
        return prepared

    def job_spec(self, request: RunRequest, alone: tuple[RunSpec, WorkspaceIndex] | None = None) -> JobSpec | str:
        """What runs for this document; a string says why nothing can (e.g. a syntax error).
        `alone`: the run and the index of the document alone it was chosen with."""
        prepared = self._prepared_for(request)
        plan = prepared.plan if prepared is not None else build_plan(request.text, request.path)
        if plan.error:
            return plan.error
        yield_point()  # in the server: a message waiting for the event loop goes first
        settings = JobSettings.from_settings(self.settings_provider())
        run, index = alone if alone is not None else (self.run_for(request), None)
        yield_point()
        itself = os.path.realpath(run.driver) == os.path.realpath(request.path)
        main = plan if itself or self._missed_before(request, run) else self._driver_plan(run.driver, request)
        if main is None:  # the driver does not parse: the document runs itself
            main = plan
            run = _on_its_own(run)
        self.runs[request.key or request.path] = run
        if main is plan and not itself:
            run = _on_its_own(run)  # for what is recorded; self.runs keeps the driver (why-notes)
        layout = project.layout(main.filename, self.root or Path(run.workspace_root))
        overlay = {p: t for p, t in request.open_documents.items() if p != request.path}
        if main.filename != request.path:
            overlay[request.path] = request.text  # the driver imports the document as it is now
        settings_object = self.settings_provider()
        return JobSpec(
            key=request.key or request.path, main=main, record=self._recorded(request.path, run, index), overlay=overlay,
            roots=layout.roots, workspace=str(layout.workspace) if layout.workspace else None,
            module=layout.module, cwd=os.path.dirname(main.filename), **_script_settings(settings_object),
            observers=list(request.observers), options=dict(request.options),
            device=settings.device, timeout=settings.timeout, memory_mb=settings.memory_mb)

    def _driver_plan(self, driver: str, request: RunRequest) -> ExecutionPlan | None:
        text = _text_of(driver, request)
        plan = build_plan(text, driver) if text is not None else None
        return None if plan is None or plan.error else plan

    def _missed_before(self, request: RunRequest, run: RunSpec) -> bool:
        missed = self._missed_drivers.get(request.path)
        return missed is not None and missed[:2] == (run.driver, hash(_text_of(run.driver, request)))

    def _recorded(self, document: str, run: RunSpec, index: WorkspaceIndex | None = None) -> list[str]:
        """The document, its driver, and the files defining the classes the driver runs (as
        `index` knows them; the workspace's by default). Project files the job imports are
        recorded anyway when they run (shapes/imports.py): these are planned ahead."""
        files = [document] + ([run.driver] if not run.runs_itself else [])
        with self._index_lock if index is None else contextlib.nullcontext():
            defining = {use.cls.path for use in (index or self.index()).live_uses(run.driver)}
        return files + sorted(defining - set(files))[:MAX_CLASS_FILES]

    def probe_spec(self, request: RunRequest, probes: list[Probe], key: str) -> JobSpec:
        """A background job that only synthesizes calls of `probes` (classes of the document),
        in the document's own package context, with the editor's text of the document."""
        settings = JobSettings.from_settings(self.settings_provider())
        layout = project.layout(request.path, self.root)
        overlay = {**request.open_documents, request.path: request.text}
        shapes = getattr(self.settings_provider(), "shapes", None)
        return JobSpec(
            key=key, main=ExecutionPlan(request.path, ""), record=[request.path], overlay=overlay,
            roots=layout.roots, workspace=str(layout.workspace) if layout.workspace else None,
            module=layout.module, cwd=os.path.dirname(request.path), env=dict(getattr(shapes, "env", None) or {}),
            probes=probes, device=settings.device, timeout=settings.timeout, memory_mb=settings.memory_mb,
            # The module-call tree (summary, class code lens) of the synthesized calls; the
            # training-step observers have no step to measure here.
            observers=[name for name in request.observers if name == "modules"], background=True)

    async def analyse(self, request: RunRequest, on_driver: Callable[[Reports], None] | None = None,
                      synthesize: bool = True) -> Reports | None:
        """Reports by file path (the document's own among them), or None if the job was
        cancelled. A document that cannot run gets a report whose `stopped` says why.
        `on_driver` hears the driver's reports before the synthesized calls run; `synthesize`
        False: none run (`torch-lsp check`: synthesized calls never report errors)."""
        spec = await self.spec_for(request)
        if isinstance(spec, str):
            return {request.path: ShapeReport(path=request.path, stopped=spec)}
        reports = await self.engine.run(spec, first=request.on_screen)
        if reports is None:
            return None
        reports.setdefault(request.path, ShapeReport(path=request.path))
        run = self.runs.get(request.key or request.path)
        missed = self._missed_drivers.get(request.path)
        if run is not None and missed is not None and missed[0] == run.driver and spec.main.filename == request.path:
            # Ran on its own because the driver missed the document before: say why, as then.
            reports.setdefault(run.driver, ShapeReport(path=run.driver, stopped=missed[2]))
        loop = asyncio.get_running_loop()  # index queries and parses stay off the event loop
        if (run is not None and spec.main.filename == run.driver != request.path
                and await loop.run_in_executor(None, self._driver_missed, request, reports)):
            reports, spec = await self._run_on_its_own(request, run, reports)
            if reports is None:
                return None
        if on_driver is not None:
            # What the driver stood in for, shown already. The reasons too when no synthesized call
            # can still give the forwards shapes; else the last run's, until this run's are known:
            # a why-note must not blink out of the hover for the time of every run.
            reasons = not (synthesize and synthesis_on(self.settings_provider()))
            await loop.run_in_executor(None, self.explain, request, reports, reasons)
            # The last batch names (a text diff, maybe a loader's file read): off the event loop.
            on_driver(await loop.run_in_executor(None, self._names.carry, request.key or request.path, reports, spec))
        if synthesize:
            reports = await self.synthesize(request, reports, spec)
            if reports is None:
                return None
        # After the synthesized calls: their shapes and failures count.
        await loop.run_in_executor(None, self.explain, request, reports)
        return reports

    async def synthesize(self, request: RunRequest, reports: Reports, spec: JobSpec | None = None) -> Reports | None:
        """The driver's reports with synthesized calls of the classes it did not reach, and the
        batch dimension of its DataLoaders named (`spec`: the driver's job, run once more with
        larger batches; batch_dims.py)."""
        key = request.key or request.path
        keys = self._probe_keys.setdefault(key, set())
        batched = asyncio.ensure_future(self._batch_variant(spec, reports, key, keys))
        prepared = self._prepared_for(request)
        probes = await asyncio.get_running_loop().run_in_executor(
            None, probes_for, request.path, request.text, self.settings_provider(),
            self.root or project.layout(request.path, None).roots[0],  # a parse: off the event loop
            prepared.hints if prepared is not None else None)
        merged = reports
        if probe_jobs.unreached(probes, reports.get(request.path)):
            engine = self.engine

            def spec_for(group: list[Probe], job_key: str) -> JobSpec:
                keys.add(job_key)
                return self.probe_spec(request, group, job_key)

            merged = await probe_jobs.synthesize(engine.run, spec_for, key, request.path, probes, reports,
                                                 engine.at_once, JobSettings.from_settings(self.settings_provider()).timeout)
        variant = await batched
        if merged is None:
            return None
        # Naming (maybe a loader's file read) and carrying (a text diff): off the event loop.
        loop = asyncio.get_running_loop()
        if not variant or spec is None:  # no naming run, or a newer version's replaced it
            return await loop.run_in_executor(None, self._names.carry, key, merged, spec)
        return await loop.run_in_executor(None, self._names.name, key, merged, reports, variant, spec)

    async def _batch_variant(self, spec: JobSpec | None, reports: Reports, key: str, keys: set[str]) -> Reports | None:
        if spec is None or not spec.main.source or not batch_dims.loaders_of(reports):
            return None
        keys.add(f"{key}#batch")
        return await self.engine.run(batch_dims.variant_spec(spec, f"{key}#batch"))

    def _driver_missed(self, request: RunRequest, reports: Reports) -> bool:
        """Did the driver's run never reach the document's forwards (nothing shown, no error)?"""
        report = reports[request.path]
        forwards = self._forwards(request)
        return bool(forwards) and not report.errors and not any(why.has_shapes(report, f) for f in forwards)

    async def _run_on_its_own(self, request: RunRequest, run: RunSpec,
                              first: Reports) -> tuple[Reports | None, JobSpec | None]:
        """The driver stopped before the document's classes ran: run the document itself, and
        remember it until the driver changes. Returns the reports and the job that ran."""
        driver = first.get(run.driver) or ShapeReport(path=run.driver)
        self._missed_drivers[request.path] = (run.driver, hash(_text_of(run.driver, request)), driver.stopped)
        spec = await self.spec_for(request)
        if isinstance(spec, str):
            return None, None
        reports = await self.engine.run(spec, first=request.on_screen)
        if reports is None:
            return None, None
        reports.setdefault(request.path, ShapeReport(path=request.path))
        reports.setdefault(run.driver, driver)
        return reports, spec

    def _forwards(self, request: RunRequest) -> list:
        """The document's forwards, from the index its last job's driver was chosen with: the
        workspace's, or, while the first scan runs, the document's alone (which module classes
        it defines is then the same in both: `choose_driver_alone`)."""
        alone = self._alone.get(request.key or request.path)
        if alone is not None and not self._scanned:
            return why.forwards_of(alone, request.path)
        self._alone.clear()  # scanned: none is read again (one may have come after the scan's end)
        with self._index_lock:
            return why.forwards_of(self.index(request.path), request.path)

    def explain(self, request: RunRequest, reports: Reports, reasons: bool = True) -> None:
        """Why-notes and the driver's stand-ins, in the document's report. `reasons` False:
        the synthesized calls are still to run; the last reasons stand in for this run's."""
        key = request.key or request.path
        forwards = self._forwards(request)
        why.explain(request.path, reports, self.runs.get(key), forwards, synthesis_on(self.settings_provider()),
                    reasons)
        if reasons:
            self._reasons[key] = why.reasons_by_class(reports.get(request.path), forwards)
        else:
            why.keep_reasons(reports.get(request.path), forwards, self._reasons.get(key, {}))

    def cancel(self, key: str) -> None:
        """Drop the document's jobs, its synthesized calls' jobs included."""
        self._reasons.pop(key, None)
        self._names.forget(key)
        if self._engine is not None:
            self._engine.cancel(key)
            for probe_key in self._probe_keys.pop(key, set()):
                self._engine.cancel(probe_key)

    def files_changed(self) -> None:
        if self._engine is not None:
            self._engine.invalidate()
