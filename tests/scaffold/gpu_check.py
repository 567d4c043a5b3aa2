"""Device check (run by hand on a CUDA machine; CI has no GPU): the CUDA paths of the actions
that behave differently there. `python tests/scaffold/gpu_check.py` prints one JSON summary.

- mixed precision on CUDA computes in float16 with an *enabled* GradScaler, whose state goes
  into the checkpoint and comes back on resume; `scaler.unscale_` runs before clipping;
- mixed precision + gradient accumulation inside main() train on the GPU;
- the DDP edit joins an NCCL process group under torchrun (one process: one GPU here);
- seeding with deterministic algorithms gives identical weights on the GPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import apply_action, fixture, instrumented, run_program, run_torchrun, span_at, with_probe  # noqa: E402

LOOP = "backward()\n"
summary: dict[str, object] = {}


def applied(source: str, *actions: str) -> str:
    for action in actions:
        needle = "EPOCHS =" if action == "reproducibility.seed" else LOOP
        source = apply_action(source, action, span_at(source, needle))
    return source


def check(name, function):
    start = time.perf_counter()
    try:
        summary[name] = {"ok": True, **function()}
    except Exception as error:  # noqa: BLE001 - report every check
        summary[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:3000]}
    summary[name]["seconds"] = round(time.perf_counter() - start, 1)


def amp_checkpoint_on_cuda():
    work = Path(tempfile.mkdtemp())
    source = fixture("loop_tensor.py").replace(
        "        loss.backward()\n",
        "        loss.backward()\n        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.05)\n")
    source = applied(source, "precision.amp", "checkpoint.save_resume")
    program = with_probe(instrumented(source), """
        import torch as _t
        _saved = _t.load("checkpoint.pt", weights_only=True)
        probe("scaler", {k: float(v) if isinstance(v, (int, float)) else str(v) for k, v in _saved["scaler"].items()})
        probe("device", str(next(model.parameters()).device))
    """)
    first = run_program(program, work, timeout=120).assert_ok()
    second = run_program(program, work, env={"EPOCHS": "3"}, timeout=120).assert_ok()
    run1, run2 = first.probe("run"), second.probe("run")
    assert first.probe("device").startswith("cuda"), first.probe("device")
    assert "torch.float16" in run1["linear_dtypes"], run1["linear_dtypes"]
    assert first.probe("scaler")["scale"] > 1, first.probe("scaler")  # enabled: a real loss scale
    # Clipping saw unscaled gradients, so the optimizer gets them at max_norm; clipping the
    # scaled ones would leave them ~65536 times smaller.
    assert all(0.04 < norm <= 0.05 + 1e-3 for norm in run1["grad_norms"]), run1["grad_norms"]
    # Steps with inf/NaN gradients are skipped by the scaler, so count at most 4 in epoch 3.
    assert run2["loaded_checksums"] == [run1["checksum"]] and 0 < run2["steps"] <= 4, run2
    return {"dtypes": run1["linear_dtypes"], "scale": first.probe("scaler")["scale"],
            "max_grad_norm": max(run1["grad_norms"]), "resumed_steps": run2["steps"]}


def amp_accumulation_in_main():
    source = applied(fixture("vision_main.py"), "precision.amp", "precision.accumulate")
    run = run_program(instrumented(source), Path(tempfile.mkdtemp()), timeout=120).assert_ok().probe("run")
    assert "torch.float16" in run["linear_dtypes"] and 0 < run["steps"] <= 2, run
    return {"dtypes": run["linear_dtypes"], "steps": run["steps"]}


def ddp_nccl_one_process():
    source = applied(fixture("vision_main.py"), "distributed.ddp")
    result = run_torchrun(instrumented(source), Path(tempfile.mkdtemp()), nproc=1, timeout=120).assert_ok()
    run = result.probe("run")
    assert run["steps"] == 8 and result.stdout.count("accuracy") == 2, run
    return {"steps": run["steps"], "world_size": run["world_size"]}


def seeded_twice_on_cuda():
    source = applied(fixture("loop_tensor.py"), "reproducibility.seed")
    work = Path(tempfile.mkdtemp())
    (work / "program.py").write_text(source.replace("model = Classifier", "model = MODEL = Classifier"))
    twice = """
import runpy, json, torch
def final_weights():
    namespace = runpy.run_path("program.py", run_name="__main__")
    return float(sum(p.detach().double().sum() for p in namespace["MODEL"].parameters()))
print("PROBE same " + json.dumps(final_weights() == final_weights()))
print("PROBE cuda " + json.dumps(torch.cuda.is_available()))
"""
    result = run_program(twice, work, env={"EPOCHS": "1"}, timeout=120).assert_ok()
    assert result.probe("same") is True and result.probe("cuda") is True
    return {"identical": True}


if __name__ == "__main__":
    import torch

    summary["torch"] = torch.__version__
    summary["cuda"] = torch.cuda.is_available() and torch.cuda.get_device_name(0)
    for name, function in [("amp_checkpoint_on_cuda", amp_checkpoint_on_cuda),
                           ("amp_accumulation_in_main", amp_accumulation_in_main),
                           ("ddp_nccl_one_process", ddp_nccl_one_process),
                           ("seeded_twice_on_cuda", seeded_twice_on_cuda)]:
        check(name, function)
    print(json.dumps(summary, indent=1))
    sys.exit(0 if all(v.get("ok") for v in summary.values() if isinstance(v, dict)) else 1)
