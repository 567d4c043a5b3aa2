"""Cold start of shape analysis, against a bare `python -c "import torch"` timed in the same run.

Usage: PYTHONPATH=. python bench/bench_cold_start.py [--runs 5] [--file fixtures/transformer_encoder.py]

Per run, interleaved (the baselines, then the worker, then the editor session):
- baseline: `python -c "import torch"` in a fresh process: wall time and RSS;
- torch's floor: a fresh process that does only what torch itself must do before the seed's
  first shapes exist: import torch and torchvision, then build a LeNet on meta and run its
  forward, loss and backward once (with dynamo's triton import skipped, as the worker does).
  Torch imports its symbolic-shapes module (and sympy) and dynamo on the first meta
  operations, and torchvision imports dynamo too: the floor of running torch's own code
  unchanged (the worker answers those imports with stand-ins: lazy_dynamo.py, lazy_symbolic.py);
- the shape worker (`python -m torch_lsp.shapes.worker`) talked to directly: the start-up steps it
  reports with `ready` (import torch; preparing jobs: stand-ins, meta kernels; the spare fork),
  its RSS, the first job (the seed fixture, which imports torchvision: imported then), the
  idle warm-up it reports afterwards, the RSS then, and a second job of the same file;
- the editor's view: `torch-lsp serve` spawned, initialize + didOpen of the seed at once, until
  its shape report exists (polled through `torch-lsp.shapeReport`).

Prints a markdown table of medians and ratios to the baseline for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lsp_client import StdioClient, rss_mb  # noqa: E402

from torch_lsp.analysis.plan import build_plan  # noqa: E402
from torch_lsp.shapes.protocol import encode_frame  # noqa: E402
from torch_lsp.shapes.spec import JobSpec  # noqa: E402

SEED = ROOT / "fixtures" / "cifar10_seed.py"
_HEADER = struct.Struct(">I")


def bare_import_torch() -> tuple[float, float]:
    """(wall seconds, RSS MB once imported: measured like the worker's) of
    `python -c "import torch"`."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", "import torch; print(open('/proc/self/status').read())"],
                         capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    rss = next(int(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("VmRSS:"))
    return elapsed, rss / 1024


# What torch itself needs before any tool can have the seed's shapes (see the module docstring).
_FLOOR = """
import torch, torch.nn as nn, torch.nn.functional as F
import torch.utils._triton as triton_checks  # dynamo would import triton (GPU kernels): not needed
triton_checks.has_triton_package = triton_checks.has_triton = lambda: False
import torchvision.transforms, torchvision.datasets
with torch.device("meta"):
    net = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 10))
    loss = F.cross_entropy(net(torch.randn(32, 3, 32, 32)), torch.zeros(32, dtype=torch.long))
    loss.backward()
print(open("/proc/self/status").read())
"""


def torch_floor() -> tuple[float, float]:
    """(wall seconds, RSS MB at the end) of torch's own work for the seed's first shapes."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _FLOOR], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    rss = next(int(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("VmRSS:"))
    return elapsed, rss / 1024


class Worker:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "torch_lsp.shapes.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "TORCH_LSP_PARALLEL_JOBS": "2"})

    def read(self, kind: str) -> dict:
        """The next message of this kind (one read earlier and not asked for yet counts)."""
        kept = getattr(self, "kept", [])
        self.kept = kept
        for message in kept:
            if message.get("type") == kind:
                kept.remove(message)
                return message
        while True:
            header = self.process.stdout.read(_HEADER.size)
            if not header:
                raise RuntimeError("the worker exited")
            message = json.loads(self.process.stdout.read(_HEADER.unpack(header)[0]))
            if message.get("type") == kind:
                return message
            kept.append(message)

    def job(self, number: int, path: Path) -> float:
        spec = JobSpec(key=str(path), main=build_plan(path.read_text(), str(path)), record=[str(path)],
                       cwd=str(path.parent), timeout=60.0)
        started = time.perf_counter()
        self.process.stdin.write(encode_frame({"type": "job", "id": number, "key": str(path), "spec": spec.to_dict()}))
        self.process.stdin.flush()
        result = self.read("result")
        elapsed = time.perf_counter() - started
        report = json.loads(result["reports_json"])[str(path)]
        assert report["stopped"] is None and report["variables"], report.get("stopped")
        return elapsed

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def worker_run(seed: Path) -> dict[str, float]:
    worker = Worker()
    ready = worker.read("ready")
    figures = {"worker ready (spawn to `ready`)": time.perf_counter() - worker.started}
    startup = ready.get("startup", {})
    figures.update({"· import torch": startup.get("import_torch_s", 0.0),
                    "· preparing jobs (stand-ins for dynamo and symbolic shapes, C++ meta kernels)": startup.get("prepare_s", 0.0),
                    "· spare fork": startup.get("spare_fork_s", 0.0)})
    figures["worker RSS at ready (MB)"] = rss_mb(worker.process.pid)
    figures[f"first job, {seed.name} (imports what its files do first: torchvision)"] = worker.job(1, seed)
    figures["spawn to first report"] = time.perf_counter() - worker.started
    figures["idle warm-up (after the first job)"] = worker.read("warm")["warm_up_s"]
    figures["worker RSS after warm-up (MB)"] = rss_mb(worker.process.pid)
    figures[f"second job, {seed.name}"] = worker.job(2, seed)
    worker.close()
    return figures


def editor_run(seed: Path) -> dict[str, float]:
    """Spawn to the first shape report of the seed, as an editor sees it: opened in this
    repository (411 Python files for the workspace index to scan first), and alone in a folder."""
    with tempfile.TemporaryDirectory() as alone:
        copy = Path(alone) / seed.name
        copy.write_text(seed.read_text())
        return {f"editor: spawn to first shape report ({seed.name}, in this repository)": _first_report(ROOT, seed),
                f"editor: spawn to first shape report ({seed.name} alone in a folder)": _first_report(Path(alone), copy)}


def _first_report(root: Path, seed: Path) -> float:
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=root,
                             env={**os.environ, "XDG_CACHE_HOME": cache})
        client.initialize(root, {"debounceMs": 0})
        client.open(seed)
        while True:
            reply, _ = client.request("workspace/executeCommand",
                                      {"command": "torch-lsp.shapeReport", "arguments": [seed.as_uri()]})
            if reply.get("result"):
                break
            time.sleep(0.05)  # polling the report: a benchmark, not a test
        elapsed = time.perf_counter() - started
        client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--file", type=Path, default=SEED, help="the file opened (default: the seed, which imports torchvision)")
    args = parser.parse_args()
    args.file = args.file.resolve()
    samples: dict[str, list[float]] = {}
    for _ in range(args.runs):
        wall, rss = bare_import_torch()
        samples.setdefault("baseline: `python -c \"import torch\"`", []).append(wall)
        samples.setdefault("baseline RSS (MB)", []).append(rss)
        wall, rss = torch_floor()
        samples.setdefault("torch's floor: import torch + torchvision, one meta forward/backward", []).append(wall)
        samples.setdefault("torch's floor RSS (MB)", []).append(rss)
        for name, value in {**worker_run(args.file), **editor_run(args.file)}.items():
            samples.setdefault(name, []).append(value)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base, base_rss = medians["baseline: `python -c \"import torch\"`"], medians["baseline RSS (MB)"]
    floor = medians["torch's floor: import torch + torchvision, one meta forward/backward"]
    floor_rss = medians["torch's floor RSS (MB)"]
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"medians of {args.runs} interleaved runs.\n")
    print("| what | median | ratio to `import torch` | ratio to torch's floor |")
    print("|---|---:|---:|---:|")
    for name, value in medians.items():
        if "(MB)" in name:
            print(f"| {name} | {value:.0f} MB | {value / base_rss:.2f} | {value / floor_rss:.2f} |")
        else:
            print(f"| {name} | {value * 1000:.0f} ms | {value / base:.2f} | {value / floor:.2f} |")


if __name__ == "__main__":
    main()
