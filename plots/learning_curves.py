"""Learning curves from the scripts' TensorBoard runs: mean over seeds with a 95% confidence band.

Reads every run under `--runs-dir` (TensorBoard's own EventAccumulator, all scalar points), keeps those that
pass `--filter`, and draws one row of panels per environment (env id + env kwargs) and one column per metric
(default `charts/episodic_return` and `charts/success_rate`), x = environment steps. Each line is one
exp_name (by default the script's name, e.g. ppo_agalite), averaged over its seeds:

1. each run's points are smoothed by a trailing moving average over `--smooth` logged points (1 = none);
2. then linearly interpolated onto `--num-points` steps evenly spaced over the range every seed of that
   line covers (from the latest first point to the earliest last point);
3. the line is the mean over seeds and the band a 95% confidence interval of that mean: by default the
   percentile bootstrap over seeds (`--ci bootstrap`, 2000 resamples), or Student's t interval (`--ci t`).
   The caption under the figure says which. With one seed there is no band.

When one (env, env kwargs, exp_name, seed) has several run directories, the newest is used (with a note).
Writes `<out>.png` and `<out>.pdf`. `--save-csv F` also writes the drawn points (one row per logged point) to
F, and `--csv F` draws from such a file instead of the runs: how a figure's data is kept in the repository.
`--keep-csv-runs` adds this machine's finished runs to F's (a figure whose runs are made a few at a time, on several machines).

Usage:
    python plots/learning_curves.py --runs-dir runs --filter corridor_length=60 --smooth 10 --out plots/results/tmaze_curves
    python plots/learning_curves.py --filter env_id=TMaze-v0 exp_name=ppo_agalite exp_name=ppo_lstm --ci t
    python plots/learning_curves.py --runs-dir runs --save-csv plots/results/curves.csv --out plots/results/curves
    python plots/learning_curves.py --csv plots/results/curves.csv --out plots/results/curves
    python plots/learning_curves.py --runs-dir runs --save-csv plots/results/curves.csv --keep-csv-runs  # add runs
Filters are key=value with key an env kwarg (corridor_length), env_id, exp_name, seed or any logged
hyperparameter; different keys must all match, several values of one key are alternatives. Give them all
after one --filter (a second --filter replaces the first).
"""
import os
import sys
from dataclasses import dataclass, field
from typing import List, Literal, Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tb_runs  # noqa: E402  (plots/tb_runs.py, next to this file)

METRIC_LABELS = {
    "charts/episodic_return": "episodic return",
    "charts/success_rate": "success rate",
    "charts/episodic_length": "episode length",
    "charts/achievements": "share of achievements unlocked",
}


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder holding the runs (searched recursively for TensorBoard event files)"""
    csv: Optional[str] = None
    """read the runs' points from this CSV (written by --save-csv) instead of --runs-dir"""
    save_csv: Optional[str] = None
    """also write the drawn runs' points (raw, before smoothing) to this CSV, to redraw the figure with --csv"""
    keep_csv_runs: bool = False
    """with --save-csv: add the finished runs of --runs-dir to the runs the CSV already holds (made on another machine
    or in another session; one still going is left out, with a note) and draw the figure from the whole CSV"""
    out: str = "plots/results/learning_curves"
    """output path without extension: <out>.png and <out>.pdf are written"""
    filter: List[str] = field(default_factory=list)
    """key=value filters, all after one --filter: --filter corridor_length=60 exp_name=ppo_agalite exp_name=ppo_lstm"""
    metrics: List[str] = field(default_factory=lambda: ["charts/episodic_return", "charts/success_rate"])
    """scalar tags to plot, one column each (a tag no run logged is left out with a note)"""
    smooth: int = 5
    """window of the trailing moving average, in logged points (one point per PPO iteration); 1 = none"""
    num_points: int = 200
    """points of the common step grid the seeds are interpolated onto"""
    ci: Literal["bootstrap", "t"] = "bootstrap"
    """confidence interval of the mean over seeds: percentile bootstrap or Student t (both 95%)"""
    n_boot: int = 2000
    """bootstrap resamples"""
    labels: List[str] = field(default_factory=list)
    """legend names, exp_name=name pairs: --labels craftax_here_agalite=AGaLiTe craftax_here_lstm=LSTM (an exp_name
    without one keeps its own)"""


def line_over_seeds(runs, metric, smooth_window, num_points, ci, n_boot):
    """Mean and CI over the runs (seeds) of one line; None when no run logged `metric`."""
    curves = []
    for run in runs:
        if metric in run["scalars"] and len(run["scalars"][metric][0]) > 0:
            steps, values = run["scalars"][metric]
            curves.append((steps, tb_runs.smooth(values, smooth_window)))
    if not curves:
        return None
    start = max(steps[0] for steps, _ in curves)
    stop = min(steps[-1] for steps, _ in curves)
    grid = np.linspace(start, stop, num_points) if stop > start else np.array([stop])
    samples = np.stack([np.interp(grid, steps, values) for steps, values in curves])
    mean, low, high = tb_runs.mean_ci(samples, ci, n_boot=n_boot)
    longest = max(steps[-1] for steps, _ in curves)
    return {"grid": grid, "mean": mean, "low": low, "high": high, "n": len(curves), "cut": stop < 0.9 * longest}


def main(args):
    """Draws the figure; returns the paths written. Raises ValueError on bad input."""
    if args.smooth < 1 or args.num_points < 2:
        raise ValueError("--smooth must be >= 1 and --num-points >= 2")
    if args.keep_csv_runs and not (args.save_csv and not args.csv):
        raise ValueError("--keep-csv-runs adds the runs of --runs-dir to the CSV of --save-csv (and not with --csv)")
    labels = dict(pair.split("=", 1) for pair in args.labels if "=" in pair)
    if len(labels) != len(args.labels):
        raise ValueError(f"--labels takes exp_name=name pairs, got {args.labels}")
    filters = tb_runs.parse_filters(args.filter)
    runs = tb_runs.load_points_csv(args.csv, filters) if args.csv else tb_runs.load_runs(args.runs_dir, filters)
    if args.keep_csv_runs:
        runs = tb_runs.finished_runs(runs)
    metrics = [m for m in args.metrics if any(m in r["scalars"] for r in runs)]
    for m in args.metrics:
        if m not in metrics:
            print(f"note: no run logged {m!r}; left out")
    if not metrics:
        tags = sorted({t for r in runs for t in r["scalars"]})
        raise ValueError(f"none of the {len(runs)} runs logged any of {args.metrics}; scalar tags present: {tags}")
    if args.save_csv:
        tb_runs.save_points_csv(runs, metrics, args.save_csv, keep_other_runs=args.keep_csv_runs)
        if args.keep_csv_runs:
            runs = tb_runs.load_points_csv(args.save_csv, filters)

    envs = list(dict.fromkeys(tb_runs.env_label(r) for r in runs))  # in load_runs' order: corridor 10, 60, 120
    exp_names = sorted({r["exp_name"] for r in runs})
    unknown = sorted(set(labels) - set(exp_names))
    if unknown:
        raise ValueError(f"--labels names exp_names no run has: {unknown}; the runs' exp_names: {exp_names}")
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(exp_names)}
    styles = {name: ["-", "--", "-.", ":"][i % 4] for i, name in enumerate(exp_names)}  # lines that coincide stay visible
    fig, axes = plt.subplots(len(envs), len(metrics), figsize=(5.5 * len(metrics), 3.8 * len(envs)), squeeze=False)
    for row, env in enumerate(envs):
        env_runs = [r for r in runs if tb_runs.env_label(r) == env]
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            drawn = 0
            for name in exp_names:
                line = line_over_seeds([r for r in env_runs if r["exp_name"] == name], metric, args.smooth, args.num_points, args.ci, args.n_boot)
                if line is None:
                    continue
                drawn += 1
                label = f"{labels.get(name, name)} (n={line['n']})"
                print(f"{env} | {metric} | {label}: final mean {line['mean'][-1]:.3f} at step {int(line['grid'][-1])}")
                if line["cut"]:
                    print(f"note: {env} | {name}: the seeds end at different steps; the line stops where the shortest ends")
                ax.plot(line["grid"], line["mean"], color=colors[name], linestyle=styles[name], label=label, marker="o" if len(line["grid"]) == 1 else None)
                ax.fill_between(line["grid"], line["low"], line["high"], color=colors[name], alpha=0.2, linewidth=0)
            if drawn == 0:
                ax.text(0.5, 0.5, f"no {metric} logged", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.legend(fontsize=8)
            if metric == "charts/success_rate":
                ax.set_ylim(-0.03, 1.03)
            ax.set_title(env, fontsize=10)
            ax.set_xlabel("environment steps")
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.grid(alpha=0.3)
    caption = (
        f"Lines: mean over seeds (n in the legend); bands: {tb_runs.ci_caption(args.ci, n_boot=args.n_boot)}. "
        f"Each run smoothed by a trailing moving average over {args.smooth} logged points, then interpolated onto "
        f"{args.num_points} steps over the range all its seeds cover."
    )
    return tb_runs.save_figure(fig, args.out, caption, caption_size=8)


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except ValueError as e:
        raise SystemExit(f"error: {e}")
