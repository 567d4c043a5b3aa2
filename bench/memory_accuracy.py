"""How close torch-lsp's training-step memory estimate (computed on meta, no GPU) is to a real run.

    PYTHONPATH=. python bench/memory_accuracy.py                 # on a CUDA machine: the full table
    PYTHONPATH=. python bench/memory_accuracy.py --largest --models resnet18,resnet50,vit_b_16,gpt
    PYTHONPATH=. python bench/memory_accuracy.py --device cpu    # small versions against the CPU allocator

Each case is a generated training script (templates below: torchvision models, a GPT-style
transformer, the seed's LeNet; SGD with momentum and Adam; fp32 and AMP with float16 autocast and
a GradScaler) whose batch size, step count and precision come from environment variables. The
estimate is the memory observer's peak for that script run as a shape job on meta, in this
process; the measurement runs the same script for real in a fresh process
(bench/memory_reference.py: `torch.cuda.max_memory_allocated()` on CUDA, the CPU allocator's
running total on CPU, less what the DataLoader holds: host memory in a GPU run). Goal: within
±10 % on every case; the predicted largest batch within one power-of-two step of the largest
batch that actually runs (`--largest`, by trial on the GPU: doubling until out of memory, then
three bisections; a few minutes per model; the seed's LeNet fits millions of samples on an 80 GB
GPU, so leave it out: `--largest --models resnet18,resnet50,vit_b_16,gpt`).
`--estimate-only` runs no real step: the estimates (and `--gpu-memory` predictions) anywhere.

Prints a Markdown table (paste it into docs/benchmarks.md with the date and the device).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VISION = """
import os
import torch
import torch.nn as nn
import torchvision

BATCH, STEPS = int(os.environ.get("BATCH", "32")), int(os.environ.get("STEPS", "3"))
AMP, SIZE = os.environ.get("AMP") == "1", int(os.environ.get("SIZE", "224"))
device = "cuda" if torch.cuda.is_available() else "cpu"


class Images(torch.utils.data.Dataset):
    def __len__(self):
        return BATCH * STEPS

    def __getitem__(self, index):
        return torch.randn(3, SIZE, SIZE), index % 10


model = {model}.to(device)
optimizer = {optimizer}
scaler = torch.amp.GradScaler("cuda", enabled=AMP)
criterion = nn.CrossEntropyLoss()
loader = torch.utils.data.DataLoader(Images(), batch_size=BATCH)
for images, labels in loader:
    images, labels = images.to(device, copy=True), labels.to(device, copy=True)
    optimizer.zero_grad()
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=AMP):
        loss = criterion(model(images), labels)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""

GPT = """
import os
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, STEPS = int(os.environ.get("BATCH", "8")), int(os.environ.get("STEPS", "3"))
AMP = os.environ.get("AMP") == "1"
VOCAB, CONTEXT, DIM, HEADS, LAYERS = {gpt}
device = "cuda" if torch.cuda.is_available() else "cpu"


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, HEADS, d // HEADS).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, DIM), nn.Embedding(CONTEXT, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, idx):
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return BATCH * STEPS

    def __getitem__(self, index):
        return torch.randint(0, VOCAB, (CONTEXT + 1,))


model = GPT().to(device)
optimizer = {optimizer}
scaler = torch.amp.GradScaler("cuda", enabled=AMP)
loader = torch.utils.data.DataLoader(Tokens(), batch_size=BATCH)
for chunk in loader:
    chunk = chunk.to(device, copy=True)
    optimizer.zero_grad()
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=AMP):
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), chunk[:, 1:].reshape(-1))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""

OPTIMIZERS = {
    "SGD": "torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9{foreach})",
    "Adam": "torch.optim.Adam(model.parameters(), lr=1e-3{foreach})",
}

# name -> (template, model / GPT config, batch on CUDA, batch on CPU, image size on CPU)
MODELS = {
    "resnet18": (VISION, "torchvision.models.resnet18()", 64, 8, 64),
    "resnet50": (VISION, "torchvision.models.resnet50()", 64, 4, 64),
    "mobilenet_v3_small": (VISION, "torchvision.models.mobilenet_v3_small()", 128, 8, 64),
    "efficientnet_b0": (VISION, "torchvision.models.efficientnet_b0()", 64, 4, 64),
    "vit_b_16": (VISION, "torchvision.models.vit_b_16()", 32, 2, 224),
    "gpt": (GPT, "50257, 1024, 768, 12, 12", 8, 2, None),
    "lenet_seed": (VISION, "SeedNet()", 256, 64, 32),
}
GPT_ON_CPU = "2048, 128, 128, 4, 2"
SEED_NET = """
import torch.nn.functional as F


class SeedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

"""


def script(model: str, optimizer: str, device: str) -> str:
    template, config, *_ = MODELS[model]
    # On CPU, foreach kernels as on CUDA (the CPU's default is the per-tensor loop).
    opt = OPTIMIZERS[optimizer].format(foreach=", foreach=True" if device == "cpu" else "")
    if template is GPT:
        return GPT.replace("{gpt}", GPT_ON_CPU if device == "cpu" else config).replace("{optimizer}", opt)
    text = VISION.replace("{model}", config).replace("{optimizer}", opt)
    if model == "lenet_seed":
        text = text.replace("model = SeedNet()", SEED_NET + "model = SeedNet()")
    return text


def environment(model: str, device: str, amp: bool, batch: int | None = None, steps: int = 3) -> dict[str, str]:
    _, _, cuda_batch, cpu_batch, cpu_size = MODELS[model]
    env = {"BATCH": str(batch or (cuda_batch if device == "cuda" else cpu_batch)), "STEPS": str(steps),
           "AMP": "1" if amp else "0"}
    if device == "cpu" and cpu_size:
        env["SIZE"] = str(cpu_size)
    if model == "lenet_seed":
        env["SIZE"] = "32"
    return env


def estimate(source: str, env: dict[str, str], batch: int | None = None, exact: bool = False) -> dict:
    """The memory observer's result for the script run as a shape job on meta (in this process)."""
    from tests.shapes.cost_helpers import run_observed

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        options = {"memory_rounding": "exact"} if exact else {}
        if batch:
            options["batch_size"] = batch
        with warnings.catch_warnings():  # "GradScaler is enabled, but CUDA is not available" on meta
            warnings.simplefilter("ignore", UserWarning)
            report, found = run_observed(source, "/bench/memory_case.py", timeout=300, **options)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if report.errors or report.stopped:
        raise RuntimeError(f"the estimate did not run: {report.errors or report.stopped}")
    return found["memory"]


def measure(source: str, env: dict[str, str], device: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "memory_case.py"
        path.write_text(source)
        # On CPU, what the DataLoader holds is left out: a GPU run keeps it in host memory. The
        # scripts copy each batch to the device (`copy=True`), so the step's batch is counted.
        extra = ["--without-data-loading"] if device == "cpu" else []
        result = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_reference.py"), "--device", device,
                                 *extra, str(path)], capture_output=True, text=True, env={**os.environ, **env},
                                cwd=folder, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def largest_that_runs(source: str, model: str, amp: bool, start: int, refine: int = 3) -> int:
    """By trial on the GPU: double until out of memory, then bisect `refine` times."""
    fits, batch = 0, start
    while True:
        if measure(source, environment(model, "cuda", amp, batch, steps=2), "cuda").get("oom"):
            break
        fits, batch = batch, batch * 2
    low, high = fits, batch
    for _ in range(refine):
        middle = (low + high) // 2
        if middle in (low, high):
            break
        if measure(source, environment(model, "cuda", amp, middle, steps=2), "cuda").get("oom"):
            high = middle
        else:
            low = middle
    return low


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--optimizers", default="SGD,Adam")
    parser.add_argument("--precisions", default=None, help="fp32,amp (default: both on CUDA, fp32 on CPU)")
    parser.add_argument("--largest", action="store_true", help="also find the largest batch that runs (CUDA)")
    parser.add_argument("--estimate-only", action="store_true",
                        help="no real runs: the estimates of the CUDA cases (and, with --gpu-memory, their "
                             "predicted largest batch), on any machine")
    parser.add_argument("--gpu-memory", type=float, help="with --estimate-only: GiB for the predicted largest batch")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m not in MODELS] + \
        [o for o in args.optimizers.split(",") if o not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)} (models: {', '.join(MODELS)}; optimizers: {', '.join(OPTIMIZERS)})")
    if args.device == "cuda" and not args.estimate_only:
        import torch  # noqa: F401 - only to fail early without CUDA

        if not torch.cuda.is_available():
            print("no CUDA device here: run with --device cpu, or on a GPU machine", file=sys.stderr)
            return 2
    precisions = (args.precisions or ("fp32,amp" if args.device == "cuda" else "fp32")).split(",")
    rows = []
    print("| model | optimizer | precision | batch | estimate (MiB) | measured (MiB) | error | largest batch: predicted / runs |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for model in args.models.split(","):
        for optimizer in args.optimizers.split(","):
            for precision in precisions:
                try:
                    rows.append(_case(model, optimizer, precision, args))
                except Exception as error:  # noqa: BLE001 - one failed case must not lose the others
                    reason = " ".join(str(error).split())[-300:]
                    print(f"| {model} | {optimizer} | {precision} | | | | failed: {reason} | |", flush=True)
                    rows.append({"model": model, "optimizer": optimizer, "precision": precision, "failed": reason})
                if args.json:  # after each case: a run stopped by a time limit keeps what it measured
                    args.json.write_text(json.dumps(rows, indent=2))
    if args.estimate_only:
        print(f"\n{len(rows)} estimates; nothing was measured (--estimate-only)")
    else:
        measured = [row for row in rows if "error" in row]
        failed = len(rows) - len(measured)
        worst = max((abs(row["error"]) for row in measured), default=0.0)
        print(f"\nworst error {worst:.1%} over {len(measured)} cases; goal ±10 %"
              + (f"; {failed} case(s) failed" if failed else ""))
    return 0


def _case(model: str, optimizer: str, precision: str, args) -> dict:
    from torch_lsp.shapes import memory_fit

    amp = precision == "amp"
    source = script(model, optimizer, args.device)
    env = environment(model, args.device, amp)
    started = time.perf_counter()
    predicted = estimate(source, env, exact=args.device == "cpu")
    estimate_s = time.perf_counter() - started
    if args.estimate_only:
        return _estimate_row(model, optimizer, precision, env, predicted, estimate_s, source, args)
    measured = measure(source, env, args.device)
    if measured.get("oom"):
        raise RuntimeError(f"out of GPU memory at batch {env['BATCH']}")
    row = {"model": model, "optimizer": optimizer, "precision": precision, "batch": int(env["BATCH"]),
           "estimate": predicted["peak"], "measured": measured["peak"], "device": measured["device"],
           "error": predicted["peak"] / measured["peak"] - 1, "estimate_s": estimate_s,
           "breakdown": predicted["breakdown"]}
    limit = ""
    if args.largest and args.device == "cuda":
        capacity = measured["total"] / 2**30
        search = memory_fit.search(lambda b: estimate(source, env, batch=b), memory_fit.usable_bytes(capacity))
        runs = largest_that_runs(source, model, amp, int(env["BATCH"]))
        row.update(predicted_largest=search["largest_batch"], largest_runs=runs)
        within = runs / 2 <= (search["largest_batch"] or 0) <= runs * 2
        limit = f"{search['largest_batch']} / {runs}" + ("" if within else " **outside one power of two**")
    print(f"| {model} | {optimizer} | {precision} | {row['batch']} | {row['estimate'] / 2**20:,.1f} | "
          f"{row['measured'] / 2**20:,.1f} | {row['error']:+.1%} | {limit} |", flush=True)
    return row


def _estimate_row(model, optimizer, precision, env, predicted, estimate_s, source, args) -> dict:
    from torch_lsp.shapes import memory_fit

    row = {"model": model, "optimizer": optimizer, "precision": precision, "batch": int(env["BATCH"]),
           "estimate": predicted["peak"], "measured": None, "error": 0.0, "estimate_s": estimate_s,
           "breakdown": predicted["breakdown"]}
    limit = ""
    if args.gpu_memory:
        search = memory_fit.search(lambda b: estimate(source, env, batch=b), memory_fit.usable_bytes(args.gpu_memory))
        row["predicted_largest"] = search["largest_batch"]
        limit = f"{search['largest_batch']} / (not run)"
    print(f"| {model} | {optimizer} | {precision} | {row['batch']} | {row['estimate'] / 2**20:,.1f} | (not run) | "
          f"| {limit} |", flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main())
