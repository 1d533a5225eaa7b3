"""The report's numbers, on fabricated run directories: mean ± sample std over seeds, per group."""
import csv
import io
import json
import statistics

import pytest

from normlab.experiments.report import mean_std, read_metrics, run_values, write_report
from normlab.experiments.runner import run_experiment
from normlab.experiments.verdicts import welch


def fabricate(folder, runs, metrics=("test_acc", "best_test_acc", "train_loss", "examples_per_sec"), baseline=None):
    """runs: (group, seed, status, [(test_acc, train_loss, examples_per_sec) per epoch])."""
    entries = []
    for group, seed, status, epochs in runs:
        name = f"{group}-seed{seed}"
        run_dir = folder / "runs" / name
        run_dir.mkdir(parents=True)
        lines = [json.dumps({"epoch": i + 1, "test_acc": acc, "train_loss": loss, "train_acc": 0.5,
                             "examples_per_sec": rate, "epoch_seconds": 2.0}) for i, (acc, loss, rate) in enumerate(epochs)]
        (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
        error = "loss is nan" if status == "diverged" else None
        (run_dir / "summary.json").write_text(json.dumps({"status": status, "epochs_done": len(epochs),
                                                          "epochs": len(epochs), "error": error}))
        entries.append({"name": name, "group": group, "variant": group, "point": {}, "seed": seed,
                        "dir": f"runs/{name}", "status": status, "error": error})
    index = {"name": "made_up", "description": "Fabricated.", "spec": "none", "scale": "quick",
             "metrics": list(metrics), "regression": False, "runs": entries, "baseline": baseline}
    (folder / "results.json").write_text(json.dumps(index))


def rows(folder):
    return {r["group"]: r for r in csv.DictReader(io.StringIO((folder / "results.csv").read_text()))}


def test_mean_and_sample_std_over_seeds(tmp_path):
    fabricate(tmp_path, [
        ("bn", 0, "finished", [(0.70, 0.9, 1000), (0.80, 0.5, 3000)]),
        ("bn", 1, "finished", [(0.85, 0.8, 1000), (0.82, 0.4, 1000)]),
        ("bn", 2, "finished", [(0.75, 0.7, 2000), (0.84, 0.3, 2000)]),
        ("none", 0, "finished", [(0.60, 1.0, 4000)]),
        ("none", 1, "diverged", [(0.10, 2.3, 4000)]),   # not counted
    ])
    write_report(tmp_path)
    bn, none = rows(tmp_path)["bn"], rows(tmp_path)["none"]
    assert float(bn["test_acc_mean"]) == pytest.approx(0.82)
    assert float(bn["test_acc_std"]) == pytest.approx(0.02)                       # sample std of .80 .82 .84
    assert float(bn["best_test_acc_mean"]) == pytest.approx((0.80 + 0.85 + 0.84) / 3)
    assert float(bn["best_test_acc_std"]) == pytest.approx(statistics.stdev([0.80, 0.85, 0.84]))
    assert float(bn["train_loss_mean"]) == pytest.approx(0.4) and float(bn["train_loss_std"]) == pytest.approx(0.1)
    assert float(bn["examples_per_sec_mean"]) == pytest.approx((1500 + 1000 + 2000) / 3)  # harmonic per run
    assert (bn["runs"], bn["finished"], none["runs"], none["finished"]) == ("3", "3", "2", "1")
    assert float(none["test_acc_mean"]) == pytest.approx(0.60) and none["test_acc_std"] == ""
    report = (tmp_path / "report.md").read_text()
    assert "| bn | 3/3 | 0.820 ± 0.020 | 0.830 ± 0.026 | 0.400 ± 0.100 | 1,500 ± 500 |" in report
    assert "| none | 1/2 | 0.600 | 0.600 | 1.000 | 4,000 |" in report
    assert "`none-seed1`: diverged — loss is nan" in report
    assert (tmp_path / "test_acc.png").stat().st_size > 0 and (tmp_path / "train_loss.png").stat().st_size > 0


def test_run_values_for_regression_and_empty_runs():
    epochs = [{"epoch": 1, "test_mse": 2.0, "train_loss": 3.0, "examples_per_sec": 10.0},
              {"epoch": 2, "test_mse": 4.0, "train_loss": 1.0, "examples_per_sec": 30.0}]
    assert run_values(epochs) == {"test_mse": 4.0, "best_test_mse": 2.0, "train_loss": 1.0, "examples_per_sec": 15.0}
    assert run_values([]) == {}
    assert mean_std([]) == (None, None) and mean_std([2.0]) == (2.0, None)


def test_report_of_a_folder_that_is_no_experiment(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no results.json"):
        write_report(tmp_path)


def test_verdicts_against_the_baseline_variant(tmp_path):
    fabricate(tmp_path, [
        ("none", 0, "finished", [(0.70, 1.0, 1000)]), ("none", 1, "finished", [(0.74, 1.0, 1000)]),
        ("none", 2, "finished", [(0.72, 1.0, 1000)]),
        ("bn", 0, "finished", [(0.80, 0.5, 1000)]), ("bn", 1, "finished", [(0.82, 0.5, 1000)]),
        ("bn", 2, "finished", [(0.84, 0.5, 1000)]),
        ("gn", 0, "finished", [(0.81, 0.5, 1000)]), ("gn", 1, "diverged", [(0.10, 2.3, 1000)]),
    ], baseline="bn")
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Verdicts: final test acc against `bn`" in report
    # 0.82 ± t(0.975, 2)·0.02/√3 = ± 0.0497; Δ = −0.10 ± t(0.975, 4)·0.0163 = ± 0.0453, p = 0.0036
    assert "| none | 3 | 0.720 ± 0.020 | [0.670, 0.770] | -0.100 | [-0.145, -0.055] | 0.004 | separable |" in report
    assert "| bn | 3 | 0.820 ± 0.020 | [0.770, 0.870] | baseline |  |  |  |" in report
    assert "| gn | 1 | 0.810 | – | – |  |  | needs 2 seeds on each side |" in report
    none, bn, gn = rows(tmp_path)["none"], rows(tmp_path)["bn"], rows(tmp_path)["gn"]
    assert float(none["test_acc_diff"]) == pytest.approx(-0.10) and float(none["test_acc_p"]) == pytest.approx(0.0036, abs=1e-4)
    assert (none["test_acc_verdict"], bn["test_acc_verdict"], gn["test_acc_verdict"]) == ("separable", "baseline", "")
    assert float(bn["test_acc_ci_low"]) == pytest.approx(0.82 - 4.302653 * 0.02 / 3 ** 0.5)


def test_a_regression_study_gets_verdicts_on_test_mse(tmp_path, poly_spec):
    run_experiment(poly_spec(seeds=[0, 1, 2]), out=tmp_path, log=lambda _: None)   # baseline: the first, none
    write_report(tmp_path)
    mse = {v: [read_metrics(tmp_path / f"runs/{v}-seed{s}")[-1]["test_mse"] for s in range(3)] for v in ("none", "bn")}
    verdict = welch(mse["bn"], mse["none"])
    bn = rows(tmp_path)["bn"]
    assert float(bn["test_mse_diff"]) == pytest.approx(verdict.diff) and float(bn["test_mse_p"]) == pytest.approx(verdict.p)
    assert bn["test_mse_verdict"] == verdict.label and rows(tmp_path)["none"]["test_mse_verdict"] == "baseline"
    report = (tmp_path / "report.md").read_text()
    assert "## Verdicts: final test MSE against `none`" in report and "test_acc" not in (tmp_path / "results.csv").read_text()
