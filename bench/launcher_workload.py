"""The workload of bench_launcher.py: a small MLP trained on CPU through a DataLoader.

It times its own training loop (after a warm-up), so interpreter and torch start-up are left
out, and prints ``steps_per_s=... cpu_steps_per_s=...``. Run it plainly or under ``torch-lsp train``:
``launcher_workload.py [STEPS] [DEVICE]`` (DEVICE: cpu, the default, or cuda).
"""

import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 600
WARMUP = 50

DEVICE = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu")
torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: less noise from other work on the machine
features = torch.randn(64 * 100, 128)
labels = torch.randint(0, 10, (64 * 100,))
loader = DataLoader(TensorDataset(features, labels), batch_size=64, shuffle=True)
model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).to(DEVICE)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
criterion = nn.CrossEntropyLoss()

step = 0
started = None
while step < STEPS + WARMUP:
    for batch, target in loader:
        if step == WARMUP:
            started, cpu_started = time.perf_counter(), time.thread_time()
        batch, target = batch.to(DEVICE), target.to(DEVICE)
        optimizer.zero_grad()
        loss = criterion(model(batch), target)
        loss.backward()
        optimizer.step()
        step += 1
        if step == STEPS + WARMUP:
            break
if DEVICE.type == "cuda":
    torch.cuda.synchronize()
elapsed = time.perf_counter() - started
cpu = time.thread_time() - cpu_started
# Wall-clock rate, and the rate per second of this thread's CPU time: the second hardly moves
# when other processes compete for the CPU, so it shows the launcher's own cost on a busy machine.
print(f"steps_per_s={STEPS / elapsed:.2f} cpu_steps_per_s={STEPS / cpu:.2f}")
