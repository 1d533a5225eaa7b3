"""`normlab experiment --ray` on a real Ray cluster: a head started here by the test, as `ray start`
starts one on a cluster's first node. Its workers are separate processes, so a run trains where the
driver cannot reach it, and a worker killed with SIGKILL is a lost worker as on a real cluster."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra (pip install 'normlab[ray]'); the test extra includes it")

from normlab.cli import main
from normlab.experiments import expand, load_spec
from normlab.experiments.ray_engine import engine
from normlab.experiments.runner import execute, run_experiment



@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """The address of a local Ray cluster with 2 CPUs, stopped after this module's tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = Path(sys.executable).with_name("ray")
    log = tmp_path_factory.mktemp("ray") / "head.log"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--num-gpus=0", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
                             "--disable-usage-stats"], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, f"ray start failed:\n{log.read_text()}"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(60)


def losses(run_dir):
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow   # a Ray head, and a worker process per task that imports torch
def test_every_run_is_a_task_on_the_cluster(tmp_path, ray_address, capsys, poly_spec_file):
    spec, out = poly_spec_file(), tmp_path / "exp"
    assert main(["experiment", str(spec), "--out", str(out), "--ray", ray_address]) == 0
    printed = capsys.readouterr().out
    assert "experiment tiny (full): 4 runs, 0 already done, 4 to run -> " in printed
    index = json.loads((out / "results.json").read_text())
    assert [e["status"] for e in index["runs"]] == ["finished"] * 4
    for entry in index["runs"]:  # the same numbers as the run trained here
        alone = tmp_path / "alone" / entry["name"]
        execute(next(r for r in expand(load_spec(spec)) if r.name == entry["name"]).config, alone)
        assert losses(out / entry["dir"]) == losses(alone)
    assert (out / "report.md").is_file()


@pytest.mark.slow   # a fresh worker process imports torch again: about 10 s on 2 cores (CI)
def test_a_run_on_a_lost_worker_is_retried_from_its_checkpoint(tmp_path, ray_address, poly_spec):
    spec = poly_spec(variants={"base": {}}, seeds=[0], epochs=8)
    out, run_dir = tmp_path / "exp", tmp_path / "exp/runs/base-seed0"
    killed = []

    def kill_the_worker_after_its_first_checkpoint():
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint.pt").is_file() and time.monotonic() < deadline:
            time.sleep(0.005)
        holder = (run_dir / "run.lock").read_text().split()  # "pid P on HOST", written by the worker
        os.kill(int(holder[1]), signal.SIGKILL)
        killed.append(int(holder[1]))

    killer = threading.Thread(target=kill_the_worker_after_its_first_checkpoint)
    killer.start()
    lines = []
    index = run_experiment(spec, out=out, engine=engine(ray_address), log=lines.append)
    killer.join()
    entry = index["runs"][0]
    assert killed and killed[0] != os.getpid()
    assert (entry["status"], entry["resumed"]) == ("finished", True), lines
    assert "base-seed0: finished, resumed from its checkpoint" in lines[-1]
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 9))
    execute(expand(spec)[0].config, tmp_path / "alone")  # exact resume: the same numbers as a run never killed
    assert losses(run_dir) == losses(tmp_path / "alone")


def test_ray_needs_its_flag_and_no_jobs(tmp_path, capsys, poly_spec_file):
    spec = poly_spec_file()
    assert main(["experiment", str(spec), "--ray", "--jobs", "2"]) == 1
    assert "--jobs does not apply with --ray" in capsys.readouterr().err
    assert main(["experiment", str(spec), "--cpus-per-run", "2"]) == 1
    assert "--cpus-per-run and --gpus-per-run are Ray's task shares; use them with --ray" in capsys.readouterr().err
    with pytest.raises(Exception, match="a Ray task needs a positive CPU share"):
        engine(cpus=0)
    with socket.socket() as s:                                 # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["experiment", str(spec), "--out", str(tmp_path / "exp"), "--ray", f"127.0.0.1:{port}"]) == 1
    assert (f"no Ray cluster answers at 127.0.0.1:{port} (Connection refused); start its head there with "
            "`ray start --head --port PORT`, or check the address") in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


def test_without_the_ray_package_the_error_names_the_extra(tmp_path, monkeypatch, capsys, poly_spec_file):
    spec = poly_spec_file()
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError, as when it is not installed
    assert main(["experiment", str(spec), "--out", str(tmp_path / "exp"), "--ray"]) == 1
    assert "running on Ray needs the ray package: pip install 'normlab[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()                  # nothing written: the same command works once it is installed
