"""An experiment's report, rebuilt from its folder: report.md, results.csv and overlay plots.

For every group (a variant at a grid point) and every metric, the runs' values over seeds as
mean ± std (the sample standard deviation, n − 1; none for a single seed). Only finished runs
count; the table says how many of each group's runs that is. Per run, from metrics.jsonl:

    test_acc, test_mse, train_loss, train_acc     the last epoch's value
    best_test_acc / best_test_mse                 the best over epochs (max / min)
    examples_per_sec                              over all epochs: n / Σ(1/rate), the harmonic mean
    epoch_seconds                                 the mean over epochs

Verdicts (verdicts.py) for the score, test accuracy or test MSE: per group the 95% confidence
interval of the mean over seeds, and against the baseline variant at the same grid point (the spec's
`baseline`, else its first variant) the difference with its 95% interval, Welch's p and
"separable" / "not separable".

The plots draw, per group, the mean over seeds against epoch with a band from the lowest to the
highest seed (test accuracy or test MSE, and train loss).
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from normlab._io import atomic_write_text
from normlab.experiments.runner import ExperimentError, refresh_index
from normlab.experiments.verdicts import LEVEL, confidence_interval, welch
from normlab.train.loop import overall_examples_per_sec
from normlab.plotting import figure, save_figure

LABELS = {"test_acc": "final test acc", "best_test_acc": "best test acc", "test_mse": "final test MSE",
          "best_test_mse": "best test MSE", "train_loss": "final train loss", "train_acc": "final train acc",
          "examples_per_sec": "examples/sec", "epoch_seconds": "seconds/epoch"}
SCORES = ("test_acc", "test_mse")   # the metrics that get verdicts


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ExperimentError(f"{path} is damaged (line {e.lineno}: {e.msg}); remove the run's directory "
                              f"{run_dir} and resume the experiment to train the run again") from None


def run_values(epochs: list[dict[str, Any]]) -> dict[str, float]:
    """One run's metric values from its per-epoch records (see the module docstring)."""
    if not epochs:
        return {}
    last, values = epochs[-1], {}
    for key in ("test_acc", "test_mse", "train_loss", "train_acc"):
        if last.get(key) is not None:
            values[key] = last[key]
    if "test_acc" in values:
        values["best_test_acc"] = max(e["test_acc"] for e in epochs)
    if "test_mse" in values:
        values["best_test_mse"] = min(e["test_mse"] for e in epochs)
    rate = overall_examples_per_sec(epochs)
    if rate is not None:
        values["examples_per_sec"] = rate
    seconds = [e["epoch_seconds"] for e in epochs if e.get("epoch_seconds") is not None]
    if seconds:
        values["epoch_seconds"] = statistics.fmean(seconds)
    return values


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(folder: Path, index: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per group, in the spec's order: counts and (mean, std) per metric."""
    groups: dict[str, dict[str, Any]] = {}
    for entry in index["runs"]:
        row = groups.setdefault(entry["group"], {"group": entry["group"], "variant": entry["variant"],
                                                 "point": entry["point"], "runs": 0, "finished": 0,
                                                 "values": {}, "curves": []})
        row["runs"] += 1
        if entry["status"] != "finished":
            continue
        epochs = read_metrics(folder / entry["dir"])
        row["finished"] += 1
        row["curves"].append(epochs)
        for key, value in run_values(epochs).items():
            row["values"].setdefault(key, []).append(value)
    for row in groups.values():
        row["stats"] = {key: mean_std(row["values"].get(key, [])) for key in index["metrics"]}
    rows = list(groups.values())
    add_verdicts(rows, baseline_variant(index, rows))
    return rows


def baseline_variant(index: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The variant the verdicts compare against: the spec's `baseline` (indexes before it: the first)."""
    return index.get("baseline") or (rows[0]["variant"] if rows else "")


def add_verdicts(rows: list[dict[str, Any]], baseline: str) -> None:
    """Per row and score: row["ci"][key] and, against the baseline variant's row at the same grid
    point, row["verdicts"][key] (None where either side has fewer than two seeds)."""
    for row in rows:
        base = next((r for r in rows if r["variant"] == baseline and r["point"] == row["point"]), None)
        row["baseline"] = base["group"] if base else None
        row["ci"], row["verdicts"] = {}, {}
        for key in SCORES:
            values = row["values"].get(key, [])
            row["ci"][key] = confidence_interval(values)
            if base is not None and base is not row:
                row["verdicts"][key] = welch(values, base["values"].get(key, []))


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return ""
    if key in ("examples_per_sec",):
        return f"{value:,.0f}"
    if "mse" in key:
        return f"{value:.3g}"
    return f"{value:.3f}" if key != "epoch_seconds" else f"{value:.2f}"


def _cell(key: str, stat: tuple[float | None, float | None]) -> str:
    mean, std = stat
    if mean is None:
        return "–"
    return _fmt(key, mean) + (f" ± {_fmt(key, std)}" if std is not None else "")


def scores(rows: list[dict[str, Any]]) -> list[str]:
    """The scores that some finished run has: test_acc for classifiers, test_mse for regression."""
    return [key for key in SCORES if any(row["values"].get(key) for row in rows)]


def _verdict_fields(row: dict[str, Any], key: str) -> list[Any]:
    """ci_low, ci_high, diff, diff_ci_low, diff_ci_high, p, verdict: "" where there is none."""
    ci, verdict = row["ci"][key] or ("", ""), row["verdicts"].get(key)
    if verdict is None:
        return [*ci, "", "", "", "", "baseline" if row["group"] == row["baseline"] else ""]
    return [*ci, verdict.diff, *verdict.interval, verdict.p, verdict.label]


def results_csv(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    axes = list(dict.fromkeys(k for row in rows for k in row["point"]))
    judged = scores(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["group", "variant", *axes, "runs", "finished",
                     *[f"{m}_{s}" for m in metrics for s in ("mean", "std")],
                     *[f"{m}_{s}" for m in judged for s in ("ci_low", "ci_high", "diff", "diff_ci_low",
                                                              "diff_ci_high", "p", "verdict")]])
    for row in rows:
        stats = [("" if v is None else repr(v)) for m in metrics for v in row["stats"][m]]
        verdicts = [repr(v) if isinstance(v, float) else v for m in judged for v in _verdict_fields(row, m)]
        writer.writerow([row["group"], row["variant"], *[json.dumps(row["point"].get(a)) for a in axes],
                         row["runs"], row["finished"], *stats, *verdicts])
    return buf.getvalue()


def verdict_table(rows: list[dict[str, Any]], key: str, baseline: str) -> list[str]:
    """The report's verdict section for one score: CI per group, Δ against the baseline, Welch's p."""
    level = f"{LEVEL:.0%}"
    lines = [f"## Verdicts: {LABELS[key]} against `{baseline}`", "",
             f"Mean ± std and the {level} confidence interval of the mean over seeds; Δ is the group's mean "
             f"minus the baseline's at the same grid point, with its {level} interval and p of Welch's t-test "
             f"(scipy); {'higher' if key == 'test_acc' else 'lower'} is better. \"separable\": p < {1 - LEVEL:.2g}; "
             f"\"not separable\": the seeds cannot tell the two apart.",
             "", f"| group | seeds | mean ± std | {level} CI | Δ | {level} CI of Δ | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ci, verdict = row["ci"][key], row["verdicts"].get(key)
        cells = [row["group"], str(len(row["values"].get(key, []))), _cell(key, mean_std(row["values"].get(key, []))),
                 f"[{_fmt(key, ci[0])}, {_fmt(key, ci[1])}]" if ci else "–"]
        if row["group"] == row["baseline"]:
            cells += ["baseline", "", "", ""]
        elif row["baseline"] is None:
            cells += ["–", "", "", f"no `{baseline}` run at this point"]
        elif verdict is None:
            cells += ["–", "", "", "needs 2 seeds on each side"]
        else:
            low, high = verdict.interval
            cells += [_signed(key, verdict.diff), f"[{_signed(key, low)}, {_signed(key, high)}]",
                      _fmt_p(verdict.p), verdict.label]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _signed(key: str, value: float) -> str:
    text = _fmt(key, value)
    return text if text.startswith("-") else "+" + text


def _fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def report_markdown(index: dict[str, Any], rows: list[dict[str, Any]], figures: list[str]) -> str:
    metrics = index["metrics"]
    seeds = sorted({e["seed"] for e in index["runs"]})
    lines = [f"# {index['name']} ({index['scale']} scale)", ""]
    if index.get("description"):
        lines += [index["description"].strip(), ""]
    lines += [f"Spec: {index.get('spec', '')}. Seeds: {', '.join(map(str, seeds))}. Each cell is the mean "
              f"± the sample std over the finished runs' seeds (no std for one seed).", "",
              "| group | finished | " + " | ".join(LABELS[m] for m in metrics) + " |",
              "|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = " | ".join(_cell(m, row["stats"][m]) for m in metrics)
        lines.append(f"| {row['group']} | {row['finished']}/{row['runs']} | {cells} |")
    for key in scores(rows):
        lines += [""] + verdict_table(rows, key, baseline_variant(index, rows))
    problems = [e for e in index["runs"] if e["status"] not in ("finished",)]
    if problems:
        lines += ["", "Runs that did not finish:", ""]
        lines += [f"- `{e['name']}`: {e['status']}" + (f" ({e['holder']})" if e.get("holder") else "")
                  + (f" — {e['error'].splitlines()[0]}" if e.get("error") else "") for e in problems]
    lines += [""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def overlay(rows: list[dict[str, Any]], key: str, path: Path, title: str) -> Path | None:
    """Mean over seeds per epoch, one line per group, a band from the lowest to the highest seed."""
    from matplotlib import colormaps

    fig = figure(6.0, 4.0)
    ax = fig.add_subplot()
    if len(rows) > 10:  # the default cycle has 10 colours: a study of more groups would repeat them
        ax.set_prop_cycle(color=colormaps["tab20"].colors)
    drawn = False
    for row in rows:
        curves = [[e[key] for e in epochs if e.get(key) is not None] for epochs in row["curves"]]
        n = min((len(c) for c in curves), default=0)
        if n == 0:
            continue
        per_epoch = [[c[i] for c in curves] for i in range(n)]
        xs = list(range(1, n + 1))
        line, = ax.plot(xs, [statistics.fmean(v) for v in per_epoch], marker="o", ms=3, label=row["group"])
        if len(curves) > 1:
            ax.fill_between(xs, [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        return None
    if "mse" in key:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.set_ylabel(LABELS.get(key, key).replace("final ", ""))
    ax.set_title(title, fontsize=9)
    ax.grid(True)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def write_report(folder: str | Path) -> Path:
    """Rebuild report.md, results.csv and the plots of the experiment in `folder`; returns report.md."""
    index = refresh_index(folder)   # what every run directory says now: the shards' runs too
    folder = Path(folder)
    rows = summarize(folder, index)
    atomic_write_text(folder / "results.csv", results_csv(rows, index["metrics"]))
    figures = []
    try:
        score = "test_mse" if index.get("regression") else "test_acc"
        for key in (score, "train_loss"):
            if overlay(rows, key, folder / f"{key}.png", f"{index['name']}: {key.replace('_', ' ')}"):
                figures.append(f"{key}.png")
    except ImportError:  # matplotlib is an extra: the tables do not need it
        pass
    return atomic_write_text(folder / "report.md", report_markdown(index, rows, figures))
