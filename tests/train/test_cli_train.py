"""`normlab train` end to end on the real Fashion-MNIST (a subset, so each run takes seconds)."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab.cli import main
from normlab.train import config as c
from normlab.train.callbacks import load_checkpoint
from normlab.run import run

pytestmark = pytest.mark.usefixtures("real_fashion_mnist")
SMALL = ["--train-subset", "1024", "--batch-size", "128", "--quiet", "--seed", "1"]
DETERMINISTIC = ("epoch", "train_loss", "train_acc", "test_acc", "lr")


def metrics(out):
    return [{k: m[k] for k in DETERMINISTIC} for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def small_config(**updates):
    return c.override(c.resolve("lenet_bn"), {"train_subset": 1024, "test_subset": 512, "batch_size": 128,
                                               "seed": 1, **updates})


def test_run_directory_has_everything_and_the_book_lines(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lenet_bn", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.toml", "curves.png",
                                                     "metrics.jsonl", "summary.json"]
    lines = printed.strip().splitlines()
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert lines[-3] == f"loss {m['train_loss']:.3f}, train acc {m['train_acc']:.3f}, test acc {m['test_acc']:.3f}"
    assert lines[-2].endswith(" examples/sec on cpu")
    assert lines[-1] == f"run directory: {out} (curves.png, metrics.jsonl, checkpoint.pt, config.toml, summary.json)"
    config = c.load(out / "config.toml")  # the fully resolved config reads back
    assert (config.model.name, config.optim.lr, config.train.epochs, config.data.train_subset) == ("lenet_bn", 1.0, 2, 1024)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 0 and "0.weight" in "".join(state["model"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2 and summary["parameters"] > 40000
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_metrics_and_resume_continues_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", "lenet_bn", "--epochs", "2", "--out", str(straight), *SMALL]) == 0
    assert main(["train", "lenet_bn", "--epochs", "1", "--out", str(split), *SMALL]) == 0
    assert metrics(split) == metrics(straight)[:1]
    assert main(["train", "lenet_bn", "--resume", "--epochs", "2", "--out", str(split), "--quiet"]) == 0
    assert metrics(split) == metrics(straight)
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (straight, split))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigint_writes_a_checkpoint_and_resume_matches(tmp_path):
    """A real Ctrl-C in a real process, mid-epoch; then --resume; then the same as uninterrupted."""
    out, straight = tmp_path / "interrupted", tmp_path / "straight"
    exe = Path(sys.executable).with_name("normlab")
    args = ["train", "lenet_bn", "--epochs", "2", "--train-subset", "3072", "--batch-size", "64", "--seed", "2"]
    proc = subprocess.Popen([exe, *args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # wait until training is under way, then press Ctrl-C
        if line.startswith("epoch   1/2"):
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "checkpoint written" in stderr and f"resume with: normlab train lenet_bn --resume --out {out}" in stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) != (2, 0)  # stopped before the end
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    # the same kind of process for all three parts: torch's thread count changes the rounding
    for extra in (["--resume", "--out", str(out)], ["--out", str(straight)]):
        subprocess.run([exe, *args, *extra, "--quiet"], check=True, capture_output=True, timeout=300)
    assert metrics(out) == metrics(straight)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    class PoisonAfterFirstEpoch:  # runs after the checkpoint callback, as the last callback
        def on_epoch_end(self, trainer, metrics):
            with torch.no_grad():
                trainer.model[0].weight.fill_(float("nan"))

    out = tmp_path / "run"
    with pytest.raises(Exception, match=r"the loss became nan at epoch 2, step 1 .*Lower the learning rate"):
        run(small_config(epochs=3), out, quiet=True, extra_callbacks=[PoisonAfterFirstEpoch()])
    state = load_checkpoint(out / "checkpoint.pt", "lenet_bn")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "Lower the learning rate" in summary["error"]


def test_closing_line_names_only_the_files_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plot] extra were not installed
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="matplotlib is not installed, so no curves.png is drawn"):
        assert main(["train", "lenet_bn", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"run directory: {out} (metrics.jsonl, checkpoint.pt, config.toml, summary.json)"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.toml", "metrics.jsonl", "summary.json"]


def test_a_finite_divergence_keeps_the_last_good_checkpoint(tmp_path):
    class BlowUpAfterFirstEpoch:  # logits ×1e4: a finite loss far above the first step's, no NaN
        def on_epoch_end(self, trainer, metrics):
            with torch.no_grad():
                trainer.model[-1].weight.mul_(1e4)

    out = tmp_path / "run"
    with pytest.raises(Exception, match=r"the loss rose to \S+, above the divergence bound .* at epoch 2, step 1 "):
        run(small_config(epochs=3), out, quiet=True, extra_callbacks=[BlowUpAfterFirstEpoch()])
    state = load_checkpoint(out / "checkpoint.pt", "lenet_bn")
    assert state["epoch"] == 1 and state["model"]["12.weight"].abs().max() < 100, "the epoch-1 weights"
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def test_a_huge_learning_rate_diverges_without_nan(tmp_path, capsys):
    """The issue's case: LeNet's sigmoids saturate at lr 1e12, so the loss stays finite (1e13)
    where it used to exit 0 with test acc 0.100; now the bound stops it, exit 1."""
    out = tmp_path / "r"
    argv = ["train", "lenet", "--lr", "1e12", "--epochs", "1", "--out", str(out), *SMALL]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"normlab: error: the loss rose to \S+, above the divergence bound \S+ \(100 × the first "
                     r"step's loss 2\.\d+; train.diverge_factor\), at epoch 1, step \d+ \(lr 1e\+12\)", err), err
    assert "No epoch had finished, so there is no checkpoint to keep." in err
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    argv[argv.index(str(out))] = str(tmp_path / "unbounded")
    assert main([*argv, "--set", "diverge_factor=0"]) == 0, "without the bound the run 'finishes'"


def test_divergence_exit_code_and_message(tmp_path, capsys):
    # regression with lr 1e30: the second prediction is ~1e30, its square overflows float32
    assert main(["train", "mlp", "--lr", "1e30", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert re.search(r"the loss became (nan|inf) at epoch 1, step 2 \(lr 1e\+30\)", err)
    assert "Lower the learning rate (optim.lr)" in err and "No epoch had finished, so there is no checkpoint" in err


@pytest.mark.parametrize("argv, message", [
    (["train", "lenet9"], "unknown model 'lenet9'; choose one of: lenet, lenet_bn"),
    (["train", "lenet", "--norm", "batchy"], "unknown norm 'batchy'; choose one of: none, batch"),
    (["train", "lenet", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'; valid keys: "),
    (["train", "resnet20", "--dataset", "poly"], "dataset poly (2 features, 1 target) needs model mlp"),
    (["train", "lenet", "--set", "dataset=cifar"], "unknown dataset 'cifar'; choose one of: fashion-mnist, mnist, poly"),
    (["train", "lenet", "--set", "optimizer=lbfgs"], "unknown optimizer 'lbfgs'; choose one of: sgd, adam, adamw"),
    (["train", "lenet", "--config", "no-such-recipe"], "config file no-such-recipe not found; the shipped recipes are: "),
])
def test_bad_input_lists_the_valid_choices(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet"]) == 1
    assert message in capsys.readouterr().err


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "lenet_bn", "--resume", "--out", str(tmp_path / "nothing")]) == 1
    assert "found no run to resume" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "lenet_bn", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    assert main(["train", "lenet", "--resume", "--out", str(out)]) == 1
    assert f"{out} is a run of model 'lenet_bn', not 'lenet'" in capsys.readouterr().err
    assert main(["train", "lenet_bn", "--resume", "--lr", "0.1", "--out", str(out)]) == 1
    assert "a resumed run keeps its config" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is a checkpoint of model 'lenet_bn', not 'vgg'"):
        load_checkpoint(out / "checkpoint.pt", "vgg")
    (out / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="checkpoint.pt is damaged: it is not the zip archive that torch.save writes"):
        load_checkpoint(out / "checkpoint.pt")


def test_batch_of_one_is_explained(tmp_path, capsys):
    argv = ["train", "lenet_bn", "--train-subset", "129", "--batch-size", "128", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 1
    assert "data.drop_last = true" in capsys.readouterr().err
    assert main([*argv, "--set", "drop_last=true", "--out", str(tmp_path / "r2")]) == 0


@pytest.mark.slow
def test_one_cosine_epoch_of_bn_lenet_reaches_078(tmp_path):
    """The issue's CI figure: one epoch of lenet_bn with a cosine schedule on the full data."""
    out = tmp_path / "run"
    assert main(["train", "lenet_bn", "--epochs", "1", "--schedule", "cosine", "--quiet", "--out", str(out)]) == 0
    assert metrics(out)[0]["test_acc"] >= 0.78


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "config key train.epochs must be at least 1, got 0"),
    (["--epochs", "-2"], "config key train.epochs must be at least 1, got -2"),
    (["--train-subset", "-5"], "config key data.train_subset must be at least 1, got -5"),
    (["--train-subset", "0"], "config key data.train_subset must be at least 1, got 0"),
    (["--batch-size", "0"], "config key data.batch_size must be at least 1, got 0"),
    (["--lr", "0"], "config key optim.lr must be above 0, got 0.0"),
    (["--set", "lr=nan"], "config key optim.lr must be above 0, got nan"),
    (["--set", "label_smoothing=1.5"], "config key optim.label_smoothing must be at least 0 and at most 1, got 1.5"),
])
def test_numbers_are_checked_where_they_are_parsed(tmp_path, capsys, args, message):
    """Issue 19.2: --epochs 0 and -2 used to 'finish', --train-subset -5 trained on 59,995 images
    and 0 raised ZeroDivisionError. Now each is refused before anything is written."""
    out = tmp_path / "run"
    assert main(["train", "lenet", "--out", str(out), "--quiet", *args]) == 1
    assert f"normlab: error: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_number_in_a_config_file_names_the_file(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nepochs = 0\n")
    assert main(["train", "lenet", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 1
    assert f"{recipe}: config key train.epochs must be at least 1, got 0" in capsys.readouterr().err
