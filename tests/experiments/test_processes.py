"""`normlab experiment` as processes: kill -9 of the command takes its pool workers with it, and two
commands on one folder never train a run twice. Real processes and real signals."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normlab._io import lock_holder

NORMLAB = Path(sys.executable).with_name("normlab")


def alive(pid: int) -> bool:
    """Whether any thread of process `pid` runs. The leader shows as a zombie while its other threads
    still exit (and the last of them closes the files, releasing the locks), so every thread counts."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:  # the thread is gone
            pass
    return any(state != "Z" for state in states)


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow   # two pool workers that import torch, then a kill
def test_kill_9_of_the_command_stops_its_workers(tmp_path, poly_spec_file):
    spec, out = poly_spec_file(seeds=[0], epochs=100_000), tmp_path / "exp"   # runs that would train for hours
    command = subprocess.Popen([NORMLAB, "experiment", spec, "--out", out, "--jobs", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = [out / "runs" / name / "run.lock" for name in ("none-seed0", "bn-seed0")]
    try:
        wait_for(lambda: all(lock_holder(lock) for lock in locks), 120, "both workers to start training")
        workers = [int(lock_holder(lock).split()[1]) for lock in locks]   # "pid P on HOST"
        assert command.pid not in workers and all(map(alive, workers))
        command.send_signal(signal.SIGKILL)
        command.wait()
        wait_for(lambda: not any(map(alive, workers)), 10, f"workers {workers} to stop with their parent")
        assert not any(lock_holder(lock) for lock in locks)                 # free for --resume
    finally:
        command.kill()
        for pid in [int(h.split()[1]) for h in map(lock_holder, locks) if h]:
            os.kill(pid, signal.SIGKILL)


def test_two_resumes_on_one_folder_train_each_run_once(tmp_path, poly_spec_file):
    spec, out = poly_spec_file(seeds=[0, 1], epochs=20), tmp_path / "exp"
    commands = [subprocess.Popen([NORMLAB, "experiment", spec, "--out", out, "--resume"], text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    logs = [c.communicate(timeout=300)[0] for c in commands]
    assert [c.returncode for c in commands] == [0, 0], logs
    trained = re.findall(r"\] (\S+): finished, [\d.]+ s", "".join(logs))  # a run this process trained has its time
    assert sorted(trained) == ["bn-seed0", "bn-seed1", "none-seed0", "none-seed1"], logs
