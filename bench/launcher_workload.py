"""The workload of bench_launcher.py: a small MLP trained on CPU through a DataLoader.

As a script it times its own training loop (after a warm-up), so interpreter and torch
start-up are left out, and prints ``steps_per_s=... cpu_steps_per_s=...``. Run it plainly or
under ``torch-lsp train``: ``launcher_workload.py [STEPS] [DEVICE]`` (DEVICE: cpu, the
default, or cuda). bench_launcher.py --paired imports ``Workload`` instead.
"""

import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

WARMUP = 50


class Workload:
    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        torch.manual_seed(0)
        torch.set_num_threads(1)  # one thread: less noise from other work on the machine
        features = torch.randn(64 * 100, 128)
        labels = torch.randint(0, 10, (64 * 100,))
        self.loader = DataLoader(TensorDataset(features, labels), batch_size=64, shuffle=True)
        self.model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                   nn.Linear(256, 10)).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.criterion = nn.CrossEntropyLoss()
        self._batches = iter(self.loader)

    def steps(self, count: int) -> None:
        for _ in range(count):
            try:
                batch, target = next(self._batches)
            except StopIteration:
                self._batches = iter(self.loader)
                batch, target = next(self._batches)
            batch, target = batch.to(self.device), target.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(batch), target)
            loss.backward()
            self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    workload = Workload(sys.argv[2] if len(sys.argv) > 2 else "cpu")
    workload.steps(WARMUP)
    started, cpu_started = time.perf_counter(), time.thread_time()
    workload.steps(steps)
    elapsed = time.perf_counter() - started
    cpu = time.thread_time() - cpu_started
    # Wall-clock rate, and the rate per second of this thread's CPU time: the second moves
    # less when other processes compete for the CPU.
    print(f"steps_per_s={steps / elapsed:.2f} cpu_steps_per_s={steps / cpu:.2f}")


if __name__ == "__main__":
    main()
