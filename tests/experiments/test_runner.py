"""The runner: one run directory per run, finished runs skipped, unfinished ones resumed, failures recorded."""
import json

import pytest

from normlab.experiments.runner import ExperimentError, run_experiment


def quiet(_):
    pass


def index_of(out):
    return json.loads((out / "results.json").read_text())


def test_every_run_gets_a_run_directory_and_an_index_entry(tmp_path, poly_spec):
    index = run_experiment(poly_spec(), out=tmp_path, log=quiet)
    assert index == index_of(tmp_path)
    assert [(e["name"], e["status"]) for e in index["runs"]] == [
        ("none-seed0", "finished"), ("none-seed1", "finished"), ("bn-seed0", "finished"), ("bn-seed1", "finished")]
    for entry in index["runs"]:
        run_dir = tmp_path / entry["dir"]
        assert {"config.toml", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= {p.name for p in run_dir.iterdir()}
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert index["regression"] and index["metrics"][0] == "test_mse"
    assert not list(tmp_path.glob("**/.*.part"))  # atomic writes leave no temporaries


def test_an_existing_experiment_needs_resume(tmp_path, poly_spec):
    run_experiment(poly_spec(seeds=[0]), out=tmp_path, log=quiet)
    with pytest.raises(ExperimentError, match="holds an experiment already; resuming continues it"):
        run_experiment(poly_spec(seeds=[0]), out=tmp_path, log=quiet)


def test_resume_skips_finished_runs_and_continues_unfinished_ones(tmp_path, poly_spec):
    run_experiment(poly_spec(seeds=[0]), out=tmp_path, log=quiet)
    finished, unfinished = tmp_path / "runs/none-seed0", tmp_path / "runs/bn-seed0"
    before = (finished / "metrics.jsonl").stat().st_mtime_ns
    (unfinished / "summary.json").unlink()  # as if killed after its last checkpoint
    lines = []
    index = run_experiment(poly_spec(seeds=[0]), out=tmp_path, resume=True, log=lines.append)
    assert "2 runs, 1 already done, 1 to run" in lines[0] and "bn-seed0: finished" in lines[1]
    assert (finished / "metrics.jsonl").stat().st_mtime_ns == before
    assert [e["status"] for e in index["runs"]] == ["finished", "finished"]
    assert json.loads((unfinished / "summary.json").read_text())["epochs_done"] == 2


def test_resume_with_more_epochs_continues_each_run(tmp_path, poly_spec):
    run_experiment(poly_spec(seeds=[0], epochs=1), out=tmp_path, log=quiet)
    run_experiment(poly_spec(seeds=[0], epochs=2), out=tmp_path, resume=True, log=quiet)
    for name in ("none-seed0", "bn-seed0"):
        epochs = [json.loads(line)["epoch"] for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2]


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, poly_spec):
    variants = {"relu": {}, "swish": {"model.options.activation": "swish"}, "tanh": {"model.options.activation": "tanh"}}
    index = run_experiment(poly_spec(variants=variants, seeds=[0]), out=tmp_path, log=quiet)
    status = {e["name"]: (e["status"], e["error"]) for e in index["runs"]}
    assert status["relu-seed0"] == ("finished", None) and status["tanh-seed0"] == ("finished", None)
    assert status["swish-seed0"][0] == "failed"
    assert "unknown activation 'swish'" in status["swish-seed0"][1]
    assert "Traceback" in (tmp_path / "runs/swish-seed0/error.txt").read_text()
    index = run_experiment(poly_spec(variants=variants, seeds=[0]), out=tmp_path, resume=True, log=quiet)
    assert [e["status"] for e in index["runs"]] == ["finished", "failed", "finished"]  # retried, fails again


def test_a_run_directory_with_another_config_is_not_reused(tmp_path, poly_spec):
    run_experiment(poly_spec(seeds=[0]), out=tmp_path, log=quiet)
    index = run_experiment(poly_spec(seeds=[0], optim={"lr": 0.5}), out=tmp_path, resume=True, log=quiet)
    assert all(e["status"] == "failed" and "optim.lr differ" in e["error"] for e in index["runs"])


def test_parallel_jobs_give_the_same_numbers_as_one_job(tmp_path, poly_spec):
    run_experiment(poly_spec(), out=tmp_path / "one", log=quiet)
    index = run_experiment(poly_spec(), out=tmp_path / "two", jobs=2, log=quiet)
    assert all(e["status"] == "finished" for e in index["runs"])
    for e in index["runs"]:
        one, two = ((tmp_path / d / e["dir"] / "metrics.jsonl").read_text().splitlines() for d in ("one", "two"))
        assert [json.loads(x)["train_loss"] for x in one] == [json.loads(x)["train_loss"] for x in two]
