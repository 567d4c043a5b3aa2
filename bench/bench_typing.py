"""Shapes while typing: how old are the shapes on screen, and does hover stay fast?

Usage: PYTHONPATH=. python bench/bench_typing.py [--documents 1 30] [--seconds 60]
       PYTHONPATH=. python bench/bench_typing.py --documents 3 --seconds 600   # the memory soak

A real `torch-lsp serve` over stdio (bench/lsp_client.py), default settings (250 ms debounce,
shape analysis on). The workspace holds copies of the seed fixture; all are opened and their
first shapes awaited. Then, for `--seconds`, every document gets an edit every 100-300 ms
(a line changed at the end of the file: every version needs a new shape job), while hover is
asked at the model's first layer line of a random document every 50 ms.

With `--on-screen K`, the editor shows the first K documents (as a split editor shows a few):
this client asks inlay hints for such a document after each of its edits, as an editor does for
what it shows, and hovers only over them; their shapes' age is reported on its own beside all
documents' (server/on_screen.py: their jobs go first).

Reported, per document count:
- the age of the shapes shown, sampled every 100 ms per document: 0 while they describe the
  current text, else the time since the text they describe was replaced by an edit
  (`torch-lsp.shapesShown`); and how long no shapes were shown at all;
- hover latency p50/p95 while typing, against hover on the same server before typing (the
  same-run baseline), as this client sees it and as the server timed it (from reading the
  request to writing the answer: `torch-lsp.serverInfo`); this client shares the cores and
  parses every notification, so its figure includes its own backlog. And the shape job time
  of one idle edit (the age's baseline);
- the shape jobs the worker started a second while typing (drivers, and background jobs when
  no driver waits; `shapeJobsStarted` of `torch-lsp.serverInfo`): a queued version replaced
  by a newer one never starts; and the jobs the server sent a second (`shapeJobs`);
- the cores kept busy while typing by the server, by the shape worker itself and by its job
  forks (CPU seconds from /proc per second of typing; the two cores are shared with this client);
- after typing stops, the time until every document's shapes are current again;
- the server's RSS, sampled every 5 s (over 10 minutes: the steady-state memory figure);
- the shape worker's RSS (the server's largest child; each job is a fork of it) at the same
  samples, against a bare `python -c "import torch"` measured at the start of the run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from lsp_client import StdioClient, cpu_times, rss_mb  # noqa: E402

SEED = ROOT / "fixtures" / "cifar10_seed.py"
HOVER_NEEDLE = "x = self.pool(F.relu(self.conv1(x)))"


def bare_torch_rss_mb() -> float:
    """RSS of `python -c "import torch"` once imported (measured like the worker's)."""
    run = subprocess.run([sys.executable, "-c", "import torch; print(open('/proc/self/status').read())"],
                         capture_output=True, text=True, check=True)
    return next(int(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("VmRSS:")) / 1024


def worker_pid(server_pid: int) -> int | None:
    """The server's largest child process: the shape worker."""
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{server_pid}/task"):
            with open(f"/proc/{server_pid}/task/{task}/children") as handle:
                children += [int(pid) for pid in handle.read().split()]
    except OSError:
        pass
    return max(children, key=rss_mb, default=None)


def worker_rss_mb(server_pid: int) -> float:
    worker = worker_pid(server_pid)
    return rss_mb(worker) if worker is not None else 0.0


def cpu_split(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server, of the shape worker itself and of the job forks it reaped."""
    user, system, _, _ = cpu_times(server_pid)
    worker = worker_pid(server_pid)
    if worker is None:
        return {"server": user + system, "worker": 0.0, "forks": 0.0}
    worker_user, worker_system, forks_user, forks_system = cpu_times(worker)
    return {"server": user + system, "worker": worker_user + worker_system, "forks": forks_user + forks_system}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Session:
    def __init__(self, workspace: Path, documents: int) -> None:
        self.client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=workspace,
                                  env={**os.environ, "XDG_CACHE_HOME": str(workspace / ".cache")})
        self.client.initialize(workspace)
        self.text = SEED.read_text()
        self.hover_line = next(i for i, line in enumerate(self.text.splitlines()) if HOVER_NEEDLE in line)
        self.paths = []
        for number in range(documents):
            path = workspace / f"model_{number}.py"
            path.write_text(self.text)
            self.paths.append(path)
        self.versions = {path: 1 for path in self.paths}
        self.replaced_at: dict[tuple[Path, int], float] = {}  # (path, version) -> when the next edit came

    def command(self, name: str, *arguments):
        reply, _ = self.client.request("workspace/executeCommand", {"command": name, "arguments": list(arguments)})
        return reply.get("result")

    def shown(self, path: Path) -> tuple[int | None, int | None]:
        result = self.command("torch-lsp.shapesShown", path.as_uri()) or {}
        return result.get("reportVersion"), result.get("documentVersion")

    def wait_current(self, paths: list[Path], timeout: float = 600) -> float:
        started = time.perf_counter()
        pending = set(paths)
        while pending:
            pending = {p for p in pending if self.shown(p)[0] != self.versions[p]}
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{len(pending)} documents never got current shapes")
            time.sleep(0.05)  # polling the server's state: a benchmark, not a test
        return time.perf_counter() - started

    def edit(self, path: Path) -> None:
        version = self.versions[path] + 1
        self.replaced_at[(path, version - 1)] = time.perf_counter()
        self.versions[path] = version
        lines = len(self.text.splitlines())
        self.client.notify("textDocument/didChange", {
            "textDocument": {"uri": path.as_uri(), "version": version},
            "contentChanges": [{"range": {"start": {"line": lines, "character": 0}, "end": {"line": lines + 1, "character": 0}},
                                "text": f"edit_marker = {version}\n"}]})

    def ask_inlay_hints(self, path: Path) -> None:
        lines = len(self.text.splitlines()) + 1
        self.client.request("textDocument/inlayHint", {"textDocument": {"uri": path.as_uri()},
                                                      "range": {"start": {"line": 0, "character": 0},
                                                                "end": {"line": lines, "character": 0}}})

    def age(self, path: Path, since: float) -> tuple[float, bool]:
        """How old the shapes shown for `path` are (0: current), and whether none are shown."""
        report_version, _ = self.shown(path)
        if report_version is None:
            return time.perf_counter() - since, True
        if report_version == self.versions[path]:
            return 0.0, False
        return time.perf_counter() - self.replaced_at[(path, report_version)], False

    def hover_ms(self, path: Path) -> tuple[float, bool]:
        reply, ms = self.client.request("textDocument/hover", {"textDocument": {"uri": path.as_uri()},
                                                               "position": {"line": self.hover_line, "character": 8}})
        return ms, "Tensor[" in str(reply.get("result"))

    def server_hovers(self) -> dict[str, float]:
        """The server's own timing of the hovers since the last call (read to answer written:
        server/latency.py), without this client's delays in reading the reply; and the shape
        jobs the worker started so far (`jobs`)."""
        info = self.command("torch-lsp.serverInfo", {"resetLatency": True}) or {}
        return {**info.get("requestLatency", {}).get("textDocument/hover", {}), "jobs": info.get("shapeJobsStarted", 0),
                "sent": info.get("shapeJobs", 0)}

    def close(self) -> None:
        self.client.close()


def run(documents: int, seconds: float, rng: random.Random, on_screen: int = 0) -> dict[str, float]:
    bare_torch = bare_torch_rss_mb()  # the worker's baseline, in the same run
    workspace = Path(tempfile.mkdtemp(prefix="torch-lsp-typing-"))
    session = Session(workspace, documents)
    try:
        for path in session.paths:
            session.client.open(path, session.text)
        first_shapes = session.wait_current(session.paths)
        session.server_hovers()  # from here on: the server's own timing of each hover
        idle_hovers = [session.hover_ms(session.paths[0])[0] for _ in range(100)]
        idle_server = session.server_hovers()
        started = time.perf_counter()  # one edit while idle: how long a shape job takes here
        session.edit(session.paths[0])
        idle_job = session.wait_current(session.paths[:1])

        shown = session.paths[:on_screen]  # the documents the editor shows (--on-screen)
        for path in shown:
            session.ask_inlay_hints(path)
        ages, shown_ages, hovers, blank = [], [], [], 0
        rss = [rss_mb(session.client.process.pid)]  # the server's, every 5 s (a long run is the soak)
        worker_rss = [worker_rss_mb(session.client.process.pid)]
        cpu_before = cpu_split(session.client.process.pid)
        next_edit = {path: time.perf_counter() + rng.uniform(0.1, 0.3) for path in session.paths}
        next_sample, next_hover, next_rss = time.perf_counter(), time.perf_counter(), time.perf_counter() + 5
        end = time.perf_counter() + seconds
        while (now := time.perf_counter()) < end:
            for path, due in next_edit.items():
                if now >= due:
                    session.edit(path)
                    if path in shown:
                        session.ask_inlay_hints(path)
                    next_edit[path] = now + rng.uniform(0.1, 0.3)
            if now >= next_hover:
                ms, has_shape = session.hover_ms(rng.choice(shown or session.paths))
                hovers.append(ms)
                next_hover = now + 0.05
            if now >= next_sample:
                for path in rng.sample(session.paths, min(len(session.paths), 3)):
                    age, none_shown = session.age(path, started)
                    ages.append(age)
                    blank += none_shown
                shown_ages += [session.age(path, started)[0] for path in shown]
                next_sample = now + 0.1
            if now >= next_rss:
                rss.append(rss_mb(session.client.process.pid))
                worker_rss.append(worker_rss_mb(session.client.process.pid))
                next_rss = now + 5
            time.sleep(0.005)
        typing_server = session.server_hovers()
        cpu_after = cpu_split(session.client.process.pid)
        jobs_per_s = (typing_server["jobs"] - idle_server["jobs"]) / seconds  # the idle edit's few jobs too
        sent_per_s = (typing_server["sent"] - idle_server["sent"]) / seconds
        cores = {part: (cpu_after[part] - cpu_before[part]) / seconds for part in cpu_before}
        settle = session.wait_current(session.paths)
        server_rss = rss_mb(session.client.process.pid)
        worker_rss.append(worker_rss_mb(session.client.process.pid))
    finally:
        session.close()
        shutil.rmtree(workspace, ignore_errors=True)
    edits = sum(session.versions.values()) - len(session.paths)
    return {"documents": documents, "edits": edits, "first shapes of all documents (s)": first_shapes,
            "shape job of one idle edit (s)": idle_job,
            "age of shapes shown while typing, p50 (s)": percentile(ages, 0.5),
            "age of shapes shown while typing, p95 (s)": percentile(ages, 0.95),
            "age of shapes shown while typing, max (s)": max(ages) if ages else float("nan"),
            "samples with no shapes shown (%)": 100.0 * blank / max(len(ages), 1),
            **({"age of shapes of the documents on screen, p50 / p95 / max (s)": (
                percentile(shown_ages, 0.5), percentile(shown_ages, 0.95), max(shown_ages, default=float("nan")))}
               if on_screen else {}),
            "hover p50 idle / typing (ms)": (percentile(idle_hovers, 0.5), percentile(hovers, 0.5)),
            "hover p95 idle / typing (ms)": (percentile(idle_hovers, 0.95), percentile(hovers, 0.95)),
            "hover inside the server, p50 idle / typing (ms)": (idle_server["p50Ms"], typing_server["p50Ms"]),
            "hover inside the server, p95 idle / typing (ms)": (idle_server["p95Ms"], typing_server["p95Ms"]),
            "hover inside the server, p99 idle / typing (ms)": (idle_server["p99Ms"], typing_server["p99Ms"]),
            "shape jobs started a second while typing": jobs_per_s,
            "shape jobs sent a second while typing (a newer version replaces a queued one)": sent_per_s,
            "cores busy while typing: server / shape worker / its job forks": (
                cores["server"], cores["worker"], cores["forks"]),
            "current again after typing stops (s)": settle,
            "server RSS: after opening / highest while typing / at the end (MB)": (rss[0], max(rss), server_rss),
            "worker RSS: after opening / highest / at the end (MB)": (worker_rss[0], max(worker_rss), worker_rss[-1]),
            "worker RSS highest / bare `import torch` RSS (same run)": max(worker_rss) / bare_torch,
            "bare `import torch` RSS (MB)": bare_torch}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, nargs="+", default=[1, 30])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--on-screen", type=int, default=0,
                        help="the editor shows this many of the documents (asks their inlay hints, hovers only there)")
    args = parser.parse_args()
    results = [run(count, args.seconds, random.Random(args.seed), min(args.on_screen, count)) for count in args.documents]
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"{args.seconds:.0f} s of typing; an edit every 100-300 ms per document"
          + (f"; {args.on_screen} on screen" if args.on_screen else "") + ".\n")
    print("| what | " + " | ".join(f"{r['documents']} document{'s' if r['documents'] > 1 else ''}" for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    for key in results[0]:
        if key == "documents":
            continue
        cells = []
        for result in results:
            value = result[key]
            digits = 2 if key.startswith(("cores", "age")) else 1
            cells.append(" / ".join(f"{v:.{digits}f}" for v in value) if isinstance(value, tuple) else
                         f"{value:.0f}" if key in ("edits",) else f"{value:.2f}")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
