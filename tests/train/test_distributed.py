"""Data-parallel training under torchrun on CPU (gloo, 2 processes on localhost).

The contract: 2 ranks × half the batch with --sync-bn train to the weights of 1 process with the
whole batch; without sync they do not; a resumed distributed run continues exactly; bad input and
a dead rank stop with errors that say what to do.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from normlab.data import TensorLoader
from normlab.data.loader import ImageTransform
from normlab.train import distributed
from normlab.train.callbacks import load_checkpoint

# 1001 examples in batches of 128: seven of 128 and a last one of 105, split 53 + 52 across the ranks
SUBSET = ["--train-subset", "1001", "--set", "data.test_subset=300", "--batch-size", "128", "--seed", "3",
          "--lr", "0.5", "--quiet"]


def launch(args, nproc=2, timeout=180):
    """`torchrun --standalone --nproc_per_node N -m normlab.cli train ARGS` (one thread per process)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "normlab.cli", "train", *args]
    if nproc == 1:
        cmd = [sys.executable, "-m", "normlab.cli", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hang: kill torchrun and its workers, then fail
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def max_difference(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


# ------------------------------------------------------------------ the loader's shards

@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("augment", [False, True])
def test_shards_of_each_batch_make_up_the_batch(world_size, augment):
    images = torch.randint(0, 255, (50, 6, 6), dtype=torch.uint8)
    labels = torch.arange(50)
    make = lambda: TensorLoader(images, labels, batch_size=16, seed=5,  # noqa: E731
                                transform=ImageTransform(augment=augment, shift=1))
    whole = list(make())
    shards = []
    for rank in range(world_size):
        loader = make()
        loader.shard(rank, world_size)
        assert len(loader) == len(whole) == 4  # len() counts whole batches
        shards.append(list(loader))
    for i, (x, y) in enumerate(whole):
        parts = [shard[i] for shard in shards]
        assert [len(p[1]) for p in parts] == [len(t) for t in torch.arange(len(y)).tensor_split(world_size)]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), x, rtol=0, atol=0)  # same pixels, same draws
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_shard_rejects_a_rank_outside_the_world():
    loader = TensorLoader(torch.zeros(4, 2), batch_size=2)
    with pytest.raises(ValueError, match=r"rank must be in 0\.\.1, got 2"):
        loader.shard(2, 2)


def test_batch_size_must_divide_among_the_ranks():
    distributed.check_batch_size(256, distributed.Replica(0, 4))
    with pytest.raises(ValueError, match=r"batch size 250 is the global batch, split evenly among the 4 processes .*"
                                         r"use a multiple of 4, e.g. 248 or 252"):
        distributed.check_batch_size(250, distributed.Replica(1, 4))


# ------------------------------------------------------------------ torchrun end to end

@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """One epoch of BN-LeNet on 1001 examples: 1 process, 2 with --sync-bn, 2 without; then the
    --sync-bn run resumed to 2 epochs, and a 2-process run of 2 epochs straight."""
    request.getfixturevalue("real_fashion_mnist")
    root = tmp_path_factory.mktemp("ddp")
    out = {name: root / name for name in ("single", "sync", "local", "straight")}
    jobs = {"single": (1, ["--epochs", "1"]), "sync": (2, ["--epochs", "1", "--sync-bn"]),
            "local": (2, ["--epochs", "1"]),
            "straight": (2, ["--epochs", "2", "--sync-bn", "--record-stats", "--record-every", "3"])}
    for name, (nproc, args) in jobs.items():
        done = launch(["lenet_bn", *SUBSET, *args, "--out", str(out[name])], nproc=nproc)
        assert done.returncode == 0, f"{name}: {done.stdout}\n{done.stderr}"
        out[name + "_stdout"] = done.stdout
    out["sync_epoch1"] = weights(out["sync"])
    resumed = launch(["lenet_bn", "--resume", "--epochs", "2", "--quiet", "--out", str(out["sync"])])
    assert resumed.returncode == 0, resumed.stderr
    return out


@pytest.mark.slow
def test_sync_bn_on_two_ranks_trains_like_one_process_with_the_whole_batch(runs):
    single, sync, local = weights(runs["single"]), runs["sync_epoch1"], weights(runs["local"])
    gap_local = max_difference(local, single)
    assert gap_local > 1e-2, "without sync each rank normalizes its own half: the weights must differ"
    # 8 steps in float32 with the sums in another order: orders of magnitude below the gap without sync
    assert max_difference(sync, single) < 1e-4
    m_single, m_sync = metrics(runs["single"])[0], metrics(runs["straight"])[0]
    assert m_sync["train_loss"] == pytest.approx(m_single["train_loss"], rel=1e-5)  # summed over both ranks
    assert m_sync["train_acc"] == pytest.approx(m_single["train_acc"], abs=1.5 / 1001)
    assert m_sync["test_acc"] == pytest.approx(m_single["test_acc"], abs=1.5 / 300)
    summary = json.loads((runs["straight"] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    assert "2 processes" in runs["straight_stdout"] and runs["straight_stdout"].count("training lenet_bn") == 1


@pytest.mark.slow
def test_a_resumed_distributed_run_continues_exactly(runs):
    keys = ("epoch", "train_loss", "train_acc", "test_acc", "lr")
    assert [{k: m[k] for k in keys} for m in metrics(runs["sync"])] == \
        [{k: m[k] for k in keys} for m in metrics(runs["straight"])]
    a, b = weights(runs["sync"]), weights(runs["straight"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(runs["sync"] / "checkpoint.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2  # each rank's own RNG stream is kept
    # statistics recorded on rank 0 through DDP (a recorded step that bypassed DDP would hang the ranks)
    steps = [json.loads(line)["step"] for line in (runs["straight"] / "stats.jsonl").read_text().splitlines()]
    assert steps == [3, 6, 8, 9, 12, 15, 16]  # every 3 steps and at each epoch end (8 steps per epoch)


@pytest.mark.slow
def test_two_nodes_through_a_rendezvous_endpoint_train_as_one_node_with_two_processes(runs, tmp_path):
    """torchrun --nnodes 2 with a c10d rendezvous (both "nodes" on localhost): the same job as --standalone."""
    out, endpoint = tmp_path / "nodes", f"127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
           f"--rdzv_endpoint={endpoint}", "--rdzv_id=normlab-test", "-m", "normlab.cli", "train", "lenet_bn",
           *SUBSET, "--epochs", "1", "--sync-bn", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) for _ in range(2)]
    try:
        errors = [node.communicate(timeout=180)[1] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    assert [node.returncode for node in nodes] == [0, 0], errors
    a, b = weights(out), runs["sync_epoch1"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_world_size_that_does_not_divide_the_batch_is_refused(tmp_path):
    done = launch(["mlp", "--batch-size", "11", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert done.returncode != 0
    assert "batch size 11 is the global batch, split evenly among the 2 processes" in done.stderr
    assert "e.g. 10 or 12" in done.stderr


def test_sync_bn_needs_a_batch_norm_layer(tmp_path, capsys):
    from normlab.cli import main

    assert main(["train", "mlp", "--sync-bn", "--epochs", "1", "--out", str(tmp_path / "r")]) == 1
    assert "train.sync_bn: model 'mlp' with this norm has no batch norm layer to synchronize" in capsys.readouterr().err


def start_ranks(out, epochs):
    """2 ranks of a BN-LeNet run on 20000 examples, started as torchrun would (environment variables),
    so that a test can signal one of them; returns them once epoch 1's checkpoint exists."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    args = [sys.executable, "-m", "normlab.cli", "train", "lenet_bn", "--train-subset", "20000",
            "--set", "data.test_subset=300", "--epochs", str(epochs), "--quiet", "--out", str(out)]
    ranks = [subprocess.Popen(args, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():  # written atomically at the end of epoch 1
        if time.monotonic() > deadline or ranks[0].poll() is not None:
            for rank in ranks:
                rank.kill()
            pytest.fail(f"no checkpoint after epoch 1: {ranks[0].communicate()}")
        time.sleep(0.05)
    time.sleep(0.2)  # into epoch 2
    return ranks


@pytest.mark.slow
def test_ctrl_c_on_one_rank_stops_both_at_the_same_batch_and_resume_is_exact(tmp_path, real_fashion_mnist):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    ranks = start_ranks(stopped, epochs=2)
    ranks[1].send_signal(signal.SIGINT)  # only rank 1 is asked; the request travels with the next step
    errors = [rank.communicate(timeout=120)[1] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [130, 130], errors
    state = load_checkpoint(stopped / "checkpoint.pt", "lenet_bn")
    assert state["epoch"] == 1 and 0 < state["step"] < 79, "stopped mid-epoch 2"
    assert f"interrupted at epoch 2, batch {state['step']}; checkpoint written" in errors[0]
    assert launch(["lenet_bn", "--resume", "--quiet", "--out", str(stopped)]).returncode == 0
    done = launch(["lenet_bn", "--train-subset", "20000", "--set", "data.test_subset=300", "--epochs", "2",
                   "--quiet", "--out", str(straight)])
    assert done.returncode == 0, done.stderr
    a, b = weights(stopped), weights(straight)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_dead_rank_stops_the_other_and_the_checkpoint_resumes(tmp_path, real_fashion_mnist):
    out = tmp_path / "run"
    ranks = start_ranks(out, epochs=3)
    ranks[1].send_signal(signal.SIGKILL)  # dies mid-epoch 2, without a word
    _, err = ranks[0].communicate(timeout=60)
    ranks[1].wait(timeout=10)
    assert ranks[0].returncode == 1, err
    assert "rank 0 of 2 lost contact with the other ranks during epoch 2" in err
    assert err.count("lost contact") == 1, "explained once, by the step that failed"
    assert f"The last good checkpoint is {out / 'checkpoint.pt'}" in err
    assert load_checkpoint(out / "checkpoint.pt", "lenet_bn")["epoch"] == 1
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    done = launch(["lenet_bn", "--resume", "--quiet", "--out", str(out)], timeout=300)
    assert done.returncode == 0, done.stderr
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
