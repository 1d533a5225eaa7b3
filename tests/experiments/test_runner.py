"""The runner: one run directory per run, finished runs skipped, unfinished ones resumed, failures recorded."""
import json
import os
import socket

import pytest

from normlab._io import exclusive_lock
from normlab.experiments import expand
from normlab.experiments.report import write_report
from normlab.experiments.runner import ExperimentError, execute, refresh_index, run_experiment, shard_runs


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


def test_shards_split_the_runs_and_fill_one_index(tmp_path, poly_spec):
    spec = poly_spec(seeds=[0, 1, 2])  # 6 runs
    names = [r.name for r in expand(spec)]
    shards = [[r.name for r in shard_runs(expand(spec), (k, 4))] for k in (1, 2, 3, 4)]
    assert shards == [names[0::4], names[1::4], names[2::4], names[3::4]]
    assert shards[0] == ["none-seed0", "bn-seed1"]  # a mix of variants
    lines = []
    run_experiment(spec, out=tmp_path, shard=(2, 4), log=lines.append)
    assert lines[0].startswith("experiment tiny (full): shard 2/4: 2 of 6 runs, 0 already done, 2 to run")
    assert {e["name"]: e["status"] for e in index_of(tmp_path)["runs"]} == {
        n: ("finished" if n in shards[1] else "pending") for n in names}
    for k in (1, 3, 4):
        run_experiment(spec, out=tmp_path, shard=(k, 4), log=quiet)
    index = index_of(tmp_path)
    assert [e["status"] for e in index["runs"]] == ["finished"] * 6  # no shard lost another's entries
    assert all(e["seconds"] > 0 and e["resumed"] is False for e in index["runs"])


def test_a_shard_that_does_not_exist(poly_spec):
    with pytest.raises(ExperimentError, match="shard 5/4 does not exist: shards are numbered 1 to 4"):
        shard_runs(expand(poly_spec()), (5, 4))


def test_a_run_that_another_process_trains_is_left_to_it(tmp_path, poly_spec):
    run_experiment(poly_spec(seeds=[0], epochs=1), out=tmp_path, log=quiet)
    lock = tmp_path / "runs/bn-seed0/run.lock"
    (tmp_path / "runs/bn-seed0/summary.json").unlink()  # as if it were still training
    lines = []
    with exclusive_lock(lock):  # another process (another shard, a second --resume) trains it
        run_experiment(poly_spec(seeds=[0], epochs=2), out=tmp_path, resume=True, log=lines.append)
        entry = index_of(tmp_path)["runs"][1]
        assert (entry["status"], entry["holder"]) == ("running", f"pid {os.getpid()} on {socket.gethostname()}")
        report = write_report(tmp_path).read_text()   # what all processes have done so far, the holder named
        assert f"- `bn-seed0`: running (pid {os.getpid()} on {socket.gethostname()})" in report
    assert "1 running elsewhere, 1 to run" in lines[0] and len(lines) == 2
    assert "none-seed0: finished, resumed from its checkpoint" in lines[1]
    assert refresh_index(tmp_path)["runs"][1]["status"] == "stopped"  # its trainer was gone: resume continues it
    index = run_experiment(poly_spec(seeds=[0], epochs=2), out=tmp_path, resume=True, log=quiet)
    assert [e["status"] for e in index["runs"]] == ["finished", "finished"]
    assert "holder" not in index["runs"][1] and index["runs"][1]["resumed"] is True


def test_a_run_whose_lock_is_taken_meanwhile_is_skipped(tmp_path, poly_spec):
    run = expand(poly_spec(seeds=[0]))[0]
    with exclusive_lock(tmp_path / "run.lock"):
        assert execute(run.config, tmp_path) is None
    assert not (tmp_path / "config.toml").exists()
    assert execute(run.config, tmp_path)["status"] == "finished"
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "finished"


def test_a_damaged_index_is_named_and_rebuilt_from_the_run_directories(tmp_path, poly_spec):
    run_experiment(poly_spec(seeds=[0]), out=tmp_path, log=quiet)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ExperimentError, match=r"results.json is damaged \(Expecting property name.*remove it and resume"):
        run_experiment(poly_spec(seeds=[0]), out=tmp_path, resume=True, log=quiet)
    (tmp_path / "results.json").unlink()  # the message's advice
    lines = []
    index = run_experiment(poly_spec(seeds=[0]), out=tmp_path, resume=True, log=lines.append)
    assert "2 runs, 2 already done, 0 to run" in lines[0]
    assert [(e["status"], e["seconds"] > 0) for e in index["runs"]] == [("finished", True)] * 2  # from result.json
