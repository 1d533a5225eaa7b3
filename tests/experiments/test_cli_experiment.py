"""`normlab experiment`: a spec file end to end, --list, `report DIR`, and user errors."""
import json

import pytest

from normlab.cli import main
from normlab.experiments import list_presets

SPEC = """name = "tiny"
description = "BN placement on the regression task, two seeds."
seeds = [0, 1]
[data]
dataset = "poly"
[model]
name = "mlp"
[train]
epochs = 2
device = "cpu"
[variants]
none = { norm = "none" }
before = { norm = "batch" }
[scale.quick]
epochs = 1
seeds = [5]
"""


def test_a_spec_file_runs_and_reports(tmp_path, capsys):
    spec, out = tmp_path / "tiny.toml", tmp_path / "exp"
    spec.write_text(SPEC)
    assert main(["experiment", str(spec), "--scale", "quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "experiment tiny (quick): 2 runs, 0 already done, 2 to run with 1 job(s)" in printed
    assert f"report: {out / 'report.md'}" in printed
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["before-seed5", "none-seed5"]
    assert {"report.md", "results.csv", "results.json", "test_mse.png", "train_loss.png"} <= {p.name for p in out.iterdir()}
    assert "| group | finished | final test MSE | best test MSE | final train loss | examples/sec |" in \
        (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert main(["experiment", "report", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert main(["experiment", str(spec), "--scale", "quick", "--out", str(out)]) == 1
    assert "holds an experiment already; resuming continues it" in capsys.readouterr().err
    assert main(["experiment", str(spec), "--scale", "quick", "--out", str(out), "--resume"]) == 0
    assert "2 runs, 2 already done, 0 to run" in capsys.readouterr().out


def test_a_failed_run_makes_the_exit_status_1(tmp_path, capsys):
    spec, out = tmp_path / "bad.toml", tmp_path / "exp"
    spec.write_text(SPEC.replace('before = { norm = "batch" }', 'before = { "model.options.activation" = "swish" }'))
    assert main(["experiment", str(spec), "--scale", "quick", "--out", str(out)]) == 1
    assert "1 run(s) failed: before-seed5" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["runs"][0]["status"] == "finished"


def test_list_shows_every_preset(capsys):
    assert main(["experiment", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_presets()
    assert "21 runs  Which batch-norm layers to keep in BN-LeNet" in lines[list_presets().index("bn_layers")]


@pytest.mark.parametrize("argv, message", [
    (["experiment", "bn_layer"], "no spec file or preset 'bn_layer'; the presets are: bn_impls"),
    (["experiment", "missing.toml"], "spec file missing.toml not found"),
    (["experiment", "bn_layers", "--jobs", "0"], "--jobs takes a positive count"),
    (["experiment", "report", "."], ". holds no results.json"),
])
def test_user_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert f"normlab: error: {message}" in capsys.readouterr().err


def test_no_spec_is_a_usage_error(capsys):
    assert main(["experiment"]) == 2
    assert "give a SPEC.toml or PRESET" in capsys.readouterr().err
