"""DistributedDataParallel: the edited programs run under torchrun with 2 CPU processes (gloo)
and, unchanged, as a single process."""

import pytest

from harness import (apply_action, assert_no_new_findings, fixture, instrumented, offered, run_program, run_torchrun,
                     span_at, with_probe)

LOOP = "backward()\n"  # the cursor: on the loss.backward() line of the training loop


def distributed(name: str, *first: str) -> tuple[str, str]:
    before = source = fixture(name)
    for action in (*first, "distributed.ddp"):
        source = apply_action(source, action, span_at(source, LOOP))
    assert_no_new_findings(before, source)
    return before, source


@pytest.mark.slow
def test_seed_with_checkpoints_under_torchrun_then_resumed_by_one_process(tmp_path):
    _, source = distributed("cifar10_seed.py", "checkpoint.save_resume")
    program = with_probe(instrumented(source), """
        import os as _o, torch as _t
        if _o.environ.get("RANK", "0") == "0":  # one line: both ranks printing at once interleave
            probe("saved_keys", sorted(_t.load("checkpoint.pt", weights_only=True)["model"])[:2])
    """)
    result = run_torchrun(program, tmp_path, nproc=2).assert_ok()
    ranks = sorted(result.probes("run"), key=lambda r: r["rank"])
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    # 64 images split over 2 processes: 32 each, one batch of 32 per epoch, 2 epochs.
    assert [r["steps"] for r in ranks] == [2, 2]
    # DDP averaged the gradients: both replicas end with the same weights.
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    assert result.stdout.count("Epoch:") == 2  # rank 0 prints, rank 1 does not
    # The checkpoint holds the model, not the DDP wrapper: no "module." prefix.
    assert result.probes("saved_keys")[0] == ["conv1.bias", "conv1.weight"]

    single = run_program(program, tmp_path, env={"EPOCHS": "3"}).assert_ok()
    run = single.probe("run")
    assert (run["world_size"], run["steps"]) == (1, 2)  # the third epoch, both batches, one process
    assert run["loaded_checksums"] == [pytest.approx(ranks[0]["checksum"], rel=1e-9)]


@pytest.mark.slow
def test_training_function_under_torchrun(tmp_path):
    _, source = distributed("vision_main.py")
    result = run_torchrun(instrumented(source), tmp_path, nproc=2).assert_ok()
    ranks = sorted(result.probes("run"), key=lambda r: r["rank"])
    # 64 images / 2 processes / batches of 16: 2 steps per epoch, 2 epochs.
    assert [r["steps"] for r in ranks] == [4, 4]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    assert result.stdout.count("accuracy") == 2


def test_script_moves_into_main_with_sampler_and_device_from_setup():
    before, after = distributed("loop_tensor.py")
    main = after[after.index("def main():"):]
    assert main.startswith("def main():\n    rank, world_size, device = setup_distributed()\n    EPOCHS = ")
    assert "\ndevice = torch.device" not in after  # setup_distributed() decides the device now
    assert ("    train_dataset = TensorDataset(features, targets)\n"
            "    # Each process reads its own shard of the data.\n"
            "    train_sampler = DistributedSampler(train_dataset, num_replicas=world_size, rank=rank, shuffle=True)\n"
            "    train_loader = DataLoader(train_dataset, batch_size=BATCH_SIZE, sampler=train_sampler)\n") in main
    assert "        train_sampler.set_epoch(epoch)  # a different shuffle every epoch\n" in main
    assert after.endswith('    cleanup_distributed()\n\n\nif __name__ == "__main__":\n    main()\n')
    # The class stays at module level, between the imports and main().
    assert after.index("class Classifier") < after.index("def setup_distributed")


def test_seed_without_device_stays_on_cpu_and_its_comments_move_along():
    _, after = distributed("cifar10_seed.py")
    assert "    rank, world_size, device = setup_distributed(use_cuda=False)\n" in after
    assert "    # 训练模型 (train the model)\n    for epoch in range(" in after


def test_not_offered_where_it_cannot_be_written():
    no_loop = fixture("no_loop.py")
    assert "distributed.ddp" not in offered(no_loop, span_at(no_loop, "model = MLP"))
    _, done = distributed("loop_tensor.py")
    assert "distributed.ddp" not in offered(done, span_at(done, LOOP))
    # A helper function reads the global `model`: moving it into main() would break the helper.
    helper = fixture("loop_tensor.py") + "\n\ndef predict(x):\n    return model(x).argmax(1)\n"
    assert "distributed.ddp" not in offered(helper, span_at(helper, LOOP))
    on_device = fixture("loop_tensor.py").replace("\n\nclass Classifier", "\n\ndef to_device(x):\n    return x.to(device)\n\n\nclass Classifier")
    assert "def to_device" in on_device
    assert "distributed.ddp" not in offered(on_device, span_at(on_device, LOOP))
    seed = fixture("cifar10_seed.py")
    assert "distributed.ddp" not in offered(seed, span_at(seed, "class Net"))
