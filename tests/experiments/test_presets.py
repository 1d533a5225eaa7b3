"""Every shipped study at quick scale on the real Fashion-MNIST: it runs, and its report is written."""
import csv

import pytest

from normlab.experiments import list_presets, load_spec
from normlab.experiments.runner import run_experiment
from normlab.experiments.report import write_report

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("real_fashion_mnist")]


@pytest.mark.parametrize("name", list_presets())
def test_preset_runs_at_quick_scale(name, tmp_path):
    index = run_experiment(load_spec(name), "quick", tmp_path, log=lambda _: None)
    assert [e["name"] for e in index["runs"] if e["status"] != "finished"] == []
    write_report(tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    score = "test_mse_mean" if index["regression"] else "test_acc_mean"
    assert len(rows) == len({e["group"] for e in index["runs"]}) and all(float(r[score]) > 0 for r in rows)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "train_loss.png").is_file()
