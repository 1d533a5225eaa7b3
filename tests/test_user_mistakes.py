"""A user's mistakes and the machine's failures end in one line that names the path and the fix,
and lose nothing (issue 19): existing runs, paths that cannot be written, damaged files, a full disk."""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from normlab.cli import main

NORMLAB = Path(sys.executable).with_name("normlab")
POLY = ["mlp", "--dataset", "poly", "--quiet"]
SMALL = ["lenet_bn", "--train-subset", "256", "--set", "test_subset=256", "--batch-size", "128", "--quiet"]


def train(capsys, *args):
    code = main(["train", *args])
    return code, capsys.readouterr().err


def files(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir()}


def in_a_tmpfs(script, size="512k"):
    """Run `script` (sh) with $D a fresh tmpfs of `size` that only it sees (a user and mount namespace)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unshare -rm (user namespaces) for a private tmpfs")
    return subprocess.run(["unshare", "-rm", "sh", "-c", f'D=$(mktemp -d) && mount -t tmpfs -o size={size} tmpfs "$D" '
                           f'&& cd "$D" && {script}'], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- 1: an existing run is not overwritten

def test_an_existing_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, *POLY, "--epochs", "1", "--out", str(out))[0] == 0
    before = files(out)
    code, err = train(capsys, *POLY, "--epochs", "2", "--out", str(out))
    assert code == 1 and err == (f"normlab: error: {out} holds a run already; continue it with --resume, "
                                 "replace it with --overwrite, or choose another --out\n")
    assert files(out) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    code, err = train(capsys, *POLY, "--epochs", "1", "--out", str(tmp_path / "mine"))
    assert code == 1 and "mine holds files already" in err
    code, err = train(capsys, *POLY, "--resume", "--overwrite", "--out", str(out))
    assert code == 1 and "--resume continues the run in --out and --overwrite replaces it: give one of them" in err


def test_a_run_that_fails_at_set_up_writes_nothing(tmp_path, capsys):
    """--device cuda on a machine without one: the old run can still be resumed and inspected."""
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    assert train(capsys, *POLY, "--epochs", "1", "--record-stats", "--out", str(out))[0] == 0
    before = files(out)
    for extra in (["--overwrite"], ["--resume"]):
        code, err = train(capsys, *POLY, "--epochs", "2", "--device", "cuda", "--out", str(out), *extra)
        assert code == 1 and "torch sees no CUDA device" in err
        assert files(out) == before, extra
    assert main(["inspect", str(out)]) == 0
    assert train(capsys, *POLY, "--resume", "--epochs", "2", "--out", str(out))[0] == 0


def test_overwrite_replaces_the_whole_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, *POLY, "--epochs", "2", "--record-stats", "--out", str(out))[0] == 0
    assert train(capsys, *POLY, "--epochs", "1", "--overwrite", "--out", str(out))[0] == 0
    assert not (out / "stats.jsonl").exists(), "the old run's statistics went with it"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


# ---------------------------------------------------------------- 4: paths, damaged files, devices, a full disk

def test_an_output_path_that_cannot_be_written_is_named_before_the_data_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "no-data-here"))   # loading data would fail first
    (tmp_path / "a-file").write_text("")
    code, err = train(capsys, "lenet_bn", "--out", str(tmp_path / "a-file"))
    assert code == 1
    assert err == f"normlab: error: {tmp_path / 'a-file'} is a file, so it cannot be the run directory; choose another path\n"
    code, err = train(capsys, "lenet_bn", "--out", str(tmp_path / "a-file" / "run"))
    assert code == 1 and "a-file is a file, so no run directory can be made at" in err
    assert main(["experiment", "bn_layers", "--out", str(tmp_path / "a-file")]) == 1
    err = capsys.readouterr().err
    assert "a-file is a file, so it cannot be the experiment folder; choose another path" in err


def test_a_read_only_place_is_refused_at_once():
    done = in_a_tmpfs(f'mkdir ro && mount -t tmpfs -o ro tmpfs ro && "{NORMLAB}" train mlp --dataset poly --out ro/run; '
                      f'"{NORMLAB}" experiment bn_layers --out ro/exp')
    assert done.stderr.splitlines() == [
        "normlab: error: ro is not writable, so the run directory ro/run cannot be written; choose a place you can write to",
        "normlab: error: ro is not writable, so the experiment folder ro/exp cannot be written; choose a place you can write to"]


def test_config_dirs_report_files_and_devices(tmp_path, capsys):
    code, err = train(capsys, "--config", str(tmp_path))
    assert code == 1 and err == f"normlab: error: {tmp_path}: Is a directory; it is a folder: give a file\n"
    (tmp_path / "a-file").write_text("")
    assert main(["experiment", "report", str(tmp_path / "a-file")]) == 1
    assert "a-file is a file, not an experiment folder; give the folder that holds results.json" in capsys.readouterr().err
    code, err = train(capsys, *POLY, "--device", "tpu", "--out", str(tmp_path / "r"))
    assert code == 1 and err == "normlab: error: config key train.device takes auto, cpu, cuda, cuda:N or mps, got 'tpu'\n"
    assert not (tmp_path / "r").exists()


def test_damaged_experiment_files_are_named(tmp_path, capsys, poly_spec_file):
    out = tmp_path / "exp"
    assert main(["experiment", str(poly_spec_file(seeds=[0])), "--out", str(out)]) == 0
    (out / "runs" / "bn-seed0" / "metrics.jsonl").write_text('{"epoch": 1, "test_mse": 2.\n')
    assert main(["experiment", "report", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"normlab: error: {out / 'runs' / 'bn-seed0' / 'metrics.jsonl'} is damaged (line 1: " in err
    assert f"); remove the run's directory {out / 'runs' / 'bn-seed0'} and resume the experiment" in err
    for damaged in ("{}", "[1, 2]", '{"runs": 3}', "{'runs'"):
        (out / "results.json").write_text(damaged)
        assert main(["experiment", "report", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"normlab: error: {out / 'results.json'} is damaged (") and "remove it and resume" in err


def test_an_io_error_on_a_data_file_names_it(capsys, monkeypatch, real_fashion_mnist, tmp_path):
    def failing_read(self):
        raise OSError(errno.EIO, "Input/output error")   # as a read from a failing disk: no file named
    monkeypatch.setattr(Path, "read_bytes", failing_read)
    code, err = train(capsys, "lenet_bn", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert code == 1 and err.count("\n") == 1
    assert "-ubyte.gz: Input/output error; the disk reported an I/O error: check the disk, or copy the file again" in err


@pytest.mark.slow
@pytest.mark.usefixtures("real_fashion_mnist")
def test_a_full_disk_at_checkpoint_time_keeps_the_last_good_checkpoint():
    """A 350 KB tmpfs holds epoch 1's files (a 207 KB checkpoint) but not a second checkpoint beside
    it. The run stops with one line; once there is room (remounted larger), --resume finishes it."""
    args = " ".join(SMALL)
    done = in_a_tmpfs(f'"{NORMLAB}" train {args} --epochs 3 --out run >/dev/null; echo "exit $?"; ls -A run; '
                      f'cat run/summary.json; mount -o remount,size=4m "$D" && '
                      f'"{NORMLAB}" train lenet_bn --resume --out run --quiet >/dev/null && cat run/metrics.jsonl',
                      size="350k")
    err = done.stderr.strip().splitlines()
    assert err == ["normlab: error: run/checkpoint.pt: No space left on device; the disk is full: free space, "
                   "then continue with --resume (the last good checkpoint is kept)"], done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "exit 1"
    listed = lines[1:lines.index("{")]
    assert sorted(listed) == ["checkpoint.pt", "config.toml", "curves.png", "metrics.jsonl", "summary.json"]  # no .part
    summary = json.loads("\n".join(lines[lines.index("{"):lines.index("}") + 1]))
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    resumed = [json.loads(line) for line in lines[lines.index("}") + 1:]]
    assert [m["epoch"] for m in resumed] == [1, 2, 3], "resumed from epoch 1's checkpoint"


# ---------------------------------------------------------------- 5: a named data location is the only one

@pytest.mark.usefixtures("real_fashion_mnist")   # the system's copy is there to fall back to, and must not be used
def test_a_data_location_the_user_names_is_the_only_one(tmp_path):
    missing = tmp_path / "my-data"
    env = dict(os.environ, NORMLAB_DATA=str(missing))
    done = subprocess.run([NORMLAB, "train", "lenet_bn", "--out", tmp_path / "r"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and done.stderr.startswith("normlab: error: Fashion-MNIST (train) not found; looked for ")
    assert str(missing) in done.stderr and "/usr/share/datasets" not in done.stderr
    done = subprocess.run([NORMLAB, "data", "summary", "--root", missing], capture_output=True, text=True)
    assert done.returncode == 1 and str(missing) in done.stderr and "/usr/share/datasets" not in done.stderr
    done = subprocess.run([NORMLAB, "data", "status"], capture_output=True, text=True, env=dict(env, NORMLAB_DATA=""))
    assert done.returncode == 1 and done.stderr.startswith("normlab: error: NORMLAB_DATA is set but empty; name the folder")


# ---------------------------------------------------------------- 6: a damaged checkpoint

def test_a_damaged_checkpoint_is_called_damaged_with_the_way_out(tmp_path):
    out = tmp_path / "run"
    assert subprocess.run([NORMLAB, "train", *POLY, "--epochs", "1", "--out", out]).returncode == 0
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])        # a copy cut short
    for command in (["train", "mlp", "--resume", "--epochs", "2", "--out", out], ["inspect", out]):
        done = subprocess.run([NORMLAB, *command], capture_output=True, text=True)
        assert done.returncode == 1 and done.stderr == (
            f"normlab: error: {out / 'checkpoint.pt'} is damaged: it is not the zip archive that torch.save writes "
            "(truncated, or another kind of file). normlab writes a checkpoint whole or not at all, so this one was "
            "changed after it was written (a disk error, a copy cut short): restore it from a copy, or train the "
            "run again\n"), command
        assert "weights_only" not in done.stderr


# ---------------------------------------------------------------- 7: half-written temporaries

def test_resume_and_overwrite_clear_half_written_temporaries(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, *POLY, "--epochs", "1", "--out", str(out))[0] == 0
    for flag in ("--resume", "--overwrite"):
        (out / ".curves.png.x1y2z3.part").write_bytes(b"half a png")   # what kill -9 mid-write leaves
        assert train(capsys, *POLY, "--epochs", "2", flag, "--out", str(out))[0] == 0
        assert not list(out.glob(".*.part")), flag
