"""`normlab inspect RUN_DIR` and `normlab train --record-stats`, end to end on small runs."""
import re

import pytest
import torch

from normlab.cli import main
from normlab.inspect import read_stats, recalibrate
from normlab.inspect.plots import PLOT_FILES, save_stats_plots
from normlab.train.loop import evaluate
from normlab.run import build_loaders, load_trained

POLY = ["mlp", "--dataset", "poly", "--epochs", "1", "--device", "cpu", "--quiet"]  # 70 steps, batch 10


def train(out, *args):
    assert main(["train", *POLY, "--out", str(out), *args]) == 0


def inspect(capsys, *args):
    code = main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_a_run_with_stats_prints_gamma_beta_the_table_and_draws_the_plots(tmp_path, capsys):
    out = tmp_path / "run"
    train(out, "--norm", "batch", "--record-stats", "--record-every", "10")
    assert len(read_stats(out / "stats.jsonl")) == 8  # steps 10, 20, ..., 70 and the epoch end
    capsys.readouterr()
    code, printed, _ = inspect(capsys, out)
    assert code == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert ("net[2].weight.reshape((-1,)), net[2].bias.reshape((-1,))\n"
            f"({state['2.weight']!r},\n {state['2.bias']!r})") in printed
    row = next(line for line in printed.splitlines() if line.startswith("net[2] "))
    assert row.split()[:3] == ["net[2]", "BatchNorm1d", "4"]
    assert float(row.split()[3]) == pytest.approx(state["2.weight"].mean().item(), abs=1e-4)
    assert float(row.split()[-1]) == pytest.approx(state["2.running_var"].mean().item(), abs=1e-4)
    assert "stats.jsonl: 7 step records (steps 10..70, every 10) and 1 epoch-end records" in printed
    assert re.search(r"^net\[4\] +\d\.\d{3}e[+-]\d\d +\d\.\d{3}e[+-]\d\d$", printed, re.M)  # a gradient-norm row
    for name in PLOT_FILES:
        assert_png(out / name)
    assert f"plots: {out / 'gamma_beta.png'}" in printed


def test_plots_go_to_out(tmp_path, capsys):
    out, figures = tmp_path / "run", tmp_path / "figures"
    train(out, "--norm", "batch", "--record-stats", "--record-every", "35")
    assert inspect(capsys, out, "--out", figures)[0] == 0
    assert sorted(p.name for p in figures.iterdir()) == sorted(PLOT_FILES)
    assert not (out / "gamma_beta.png").exists()


def test_without_stats_it_says_how_to_get_them(tmp_path, capsys):
    out = tmp_path / "run"
    train(out, "--norm", "batch")
    code, printed, _ = inspect(capsys, out)
    assert code == 0 and "net[2].weight.reshape((-1,))" in printed
    assert f"no stats.jsonl in {out}" in printed and "--record-stats" in printed
    assert not any((out / name).exists() for name in PLOT_FILES)


def test_the_books_layer_prints_gamma_and_beta_as_the_seeds_did(tmp_path, capsys):
    out = tmp_path / "run"
    train(out, "--norm", "batch_d2l", "--record-stats", "--record-every", "35")
    code, printed, _ = inspect(capsys, out)
    assert code == 0 and "net[2].gamma.reshape((-1,)), net[2].beta.reshape((-1,))" in printed
    assert re.search(r"^net\[2\] +D2LBatchNorm +4 ", printed, re.M)


def test_a_model_without_norms(tmp_path, capsys):
    out = tmp_path / "run"
    train(out, "--norm", "none")
    code, printed, _ = inspect(capsys, out, "--recalibrate")
    assert code == 0 and "this model has no norm layer" in printed
    assert "no batch norm with running statistics; nothing to recalibrate" in printed


@pytest.mark.parametrize("method, batches", [("cumulative", None), ("precise", 5)])
def test_recalibrate_prints_test_scores_before_and_after(tmp_path, capsys, method, batches):
    out = tmp_path / "run"
    train(out, "--norm", "batch")
    extra = ["--num-batches", str(batches)] if batches else []
    checkpoint = (out / "checkpoint.pt").read_bytes()
    code, printed, _ = inspect(capsys, out, "--recalibrate", "--method", method, "--device", "cpu", *extra)
    assert code == 0
    line = re.search(r"test mse before (\S+), after (\S+) \((\S+)\); the checkpoint is unchanged", printed)
    assert f"({method}, {batches or 70} of 70 training batches) on cpu" in printed
    config, model = load_trained(out)
    train_iter, test_iter = build_loaders(config.data, config.train.seed)
    assert float(line[1]) == pytest.approx(evaluate(model, test_iter, regression=True), abs=1e-4)
    recalibrate(model, train_iter, method, num_batches=batches)
    assert float(line[2]) == pytest.approx(evaluate(model, test_iter, regression=True), abs=1e-4)
    assert (out / "checkpoint.pt").read_bytes() == checkpoint


def test_errors_name_the_problem_and_the_fix(tmp_path, capsys):
    code, _, err = inspect(capsys, tmp_path / "nope")
    assert code == 1 and f"no run directory {tmp_path / 'nope'}; a run trained into it makes one" in err
    (tmp_path / "empty").mkdir()
    code, _, err = inspect(capsys, tmp_path / "empty")
    assert code == 1 and "is not a run directory: it has no config.toml" in err
    out = tmp_path / "run"
    train(out, "--norm", "batch")
    (out / "checkpoint.pt").unlink()
    code, _, err = inspect(capsys, out)
    assert code == 1 and f"{out} has no checkpoint.pt: a run writes it at the end of its first epoch" in err
    assert "resume" not in err, "a run without a checkpoint cannot be resumed: no such advice"
    with pytest.raises(SystemExit):
        main(["inspect", str(out), "--recalibrate", "--num-batches", "0"])
    assert "a positive number of batches, got '0'" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "examples:" in printed and "normlab inspect runs/bn --recalibrate --method precise" in printed
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--record-stats" in capsys.readouterr().out


def test_epoch_records_alone_draw_only_gamma_beta(tmp_path):
    records = [{"kind": "epoch", "step": 10 * e, "epoch": e, "norms": {"1": {
        "type": "BatchNorm2d", "gamma": {"mean": 1.0 + e, "std": 0.1, "min": 0.9, "max": 1.1 + e, "values": []},
        "beta": {"mean": 0.0, "std": 0.1, "min": -0.1, "max": 0.1, "values": []}}}} for e in (1, 2)]
    assert save_stats_plots(records, tmp_path) == [tmp_path / "gamma_beta.png"]
    assert_png(tmp_path / "gamma_beta.png")
    assert save_stats_plots([], tmp_path / "none") == []


@pytest.mark.usefixtures("real_fashion_mnist")
def test_bn_lenet_on_fashion_mnist(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lenet_bn", "--epochs", "1", "--train-subset", "512", "--batch-size", "128",
                 "--set", "test_subset=256", "--record-stats", "--record-every", "2", "--quiet", "--out",
                 str(out)]) == 0
    assert f"look inside with: normlab inspect {out}" in capsys.readouterr().out
    assert [(r["kind"], r["step"]) for r in read_stats(out / "stats.jsonl")] == [("step", 2), ("step", 4), ("epoch", 4)]
    code, printed, _ = inspect(capsys, out, "--recalibrate", "--device", "cpu")
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert code == 0 and f"net[1].weight.reshape((-1,)), net[1].bias.reshape((-1,))\n({state['1.weight']!r}," in printed
    assert [line.split()[0] for line in printed.splitlines() if re.match(r"net\[\d+\] +\S*BatchNorm", line)] == [
        "net[1]", "net[5]", "net[10]", "net[13]"]
    assert "(cumulative, 4 of 4 training batches) on cpu" in printed and "test acc before" in printed


def test_record_every_must_be_positive_and_nothing_is_written(tmp_path, capsys):
    assert main(["train", *POLY, "--out", str(tmp_path / "run"), "--record-stats", "--record-every", "0"]) == 1
    assert "train.record_every takes a positive number of steps, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
