"""docs/slurm_study.sh as a Slurm job array runs it: the array's tasks at once, each its shard of the
study, all in one experiment folder; then the report merges them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normlab.experiments import expand, load_spec

SCRIPT = Path(__file__).parents[2] / "docs" / "slurm_study.sh"
NORMLAB = Path(sys.executable).with_name("normlab")


def array_task(task_id, first, last, *args):
    """The script as Slurm starts it for one task of `sbatch --array=first-last`."""
    env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task_id), SLURM_ARRAY_TASK_MIN=str(first),
               SLURM_ARRAY_TASK_MAX=str(last), SLURM_CPUS_PER_TASK="1", NORMLAB=str(NORMLAB))
    return subprocess.Popen(["bash", str(SCRIPT), *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow   # three processes that import torch
def test_an_array_of_three_tasks_fills_one_folder(tmp_path, poly_spec_file):
    spec = poly_spec_file(variants={"none": {"norm": "none"}, "bn": {"norm": "batch"}, "ln": {"norm": "layer"}})
    out = tmp_path / "shared" / "tiny"
    tasks = [array_task(i, 0, 2, spec, out) for i in (0, 1, 2)]      # sbatch --array=0-2: shards 1/3 to 3/3
    logs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0, 0], logs
    runs = [run.name for run in expand(load_spec(spec))]
    for k, log in enumerate(logs, start=1):
        assert f"experiment tiny (full): shard {k}/3: 2 of 6 runs" in log, log
        trained = sorted(line.split("] ")[1].split(":")[0] for line in log.splitlines() if line.startswith("["))
        assert trained == sorted(runs[k - 1::3])                      # every 3rd run from the k-th
    index = json.loads((out / "results.json").read_text())            # written by three processes at once
    assert [(e["name"], e["status"]) for e in index["runs"]] == [(name, "finished") for name in runs]
    report = subprocess.run([NORMLAB, "experiment", "report", out], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert all(f"| {group} | 2/2 |" in text for group in ("none", "bn", "ln")) and "## Verdicts: final test MSE" in text


def test_the_script_outside_an_array_says_how_to_submit_it(tmp_path):
    alone = subprocess.run(["bash", SCRIPT, "tiny.toml", tmp_path], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    assert alone.returncode == 2
    assert alone.stderr == ("not a Slurm array task (no SLURM_ARRAY_TASK_ID); usage: sbatch --array=1-N "
                            "slurm_study.sh SPEC|PRESET OUT [normlab experiment options]\n")
