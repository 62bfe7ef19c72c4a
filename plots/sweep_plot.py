"""Final performance against a swept value (e.g. T-Maze corridor length): one line per architecture.

The final value of a run is the mean of the last `--final-frac` of its logged points (default the last 10%)
of `charts/success_rate` (`--metric success`) or `charts/episodic_return` (`--metric return`). Each point of a
line is the mean of that final value over the seeds, with a 95% confidence interval of the mean as error bars:
percentile bootstrap over seeds by default (`--ci bootstrap`), or Student's t (`--ci t`); the caption says
which. The individual seeds are drawn as small dots. Writes `<out>.png` and `<out>.pdf`.

Two sources:
* event files (default): every run under `--runs-dir` passing `--filter`; the x value is the env kwarg (or
  hyperparameter) `--x-key`; the line is the exp_name with the sweep suffix `_L<number>` and the prefixes
  in `--strip-prefixes` removed (ppo_agalite -> agalite, sweep_lstm_L60 -> lstm). Runs without the x key
  (e.g. the default corridor, env_kwargs {}) are left out with a note.
* the summary CSV of benchmarks/sweep.py (`--csv`): columns script, <x-key>, seed, final_success,
  final_return, solved_at; final values as the sweep runner computed them; `--filter` applies to the CSV's columns.
  The line is the `--line-columns` (default: script) as the sweep names its runs: script, then _<column><value>
  for each further column with a value (agalite_gate_bias-4_learning_rate0.001).

Usage:
    python plots/sweep_plot.py --runs-dir runs --x-key corridor_length --metric success --out plots/results/tmaze_sweep
    python plots/sweep_plot.py --csv runs/sweep_summary.csv --metric return --ci t --out plots/results/tmaze_sweep_return
    python plots/sweep_plot.py --csv plots/results/tmaze_passive.csv --line-columns script gate_bias learning_rate \
        forget_bias --metric solved_at --show-unsolved --logx --logy --out passive_steps
(docs/tmaze_passive.md has the command that draws plots/results/tmaze_passive.png)
"""
import csv
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Literal, Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tb_runs  # noqa: E402  (plots/tb_runs.py, next to this file)

METRICS = {"success": ("charts/success_rate", "final_success", "final success rate"),
           "return": ("charts/episodic_return", "final_return", "final episodic return"),
           "solved_at": ("charts/success_rate", "solved_at", "steps to solve")}


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder holding the runs (searched recursively for TensorBoard event files)"""
    csv: Optional[str] = None
    """read this sweep summary CSV (benchmarks/sweep.py) instead of the event files"""
    x_key: str = "corridor_length"
    """the swept value: an env kwarg (or hyperparameter) of the runs, or a column of the CSV"""
    metric: Literal["success", "return", "solved_at"] = "success"
    """final success rate (charts/success_rate), final episodic return (charts/episodic_return), or the steps to
    solve: the first step where the mean success of --solved-window logged points reaches --solved-threshold
    (runs never solved are left out and counted in the printout)"""
    solved_threshold: float = 0.95
    """--metric solved_at: the mean success that counts as solved (event files; the CSV has the sweep's own)"""
    solved_window: int = 5
    """--metric solved_at: over this many consecutive logged points (one per update)"""
    final_frac: float = 0.1
    """final value of a run = mean of this last fraction of its logged points (event files only)"""
    filter: List[str] = field(default_factory=list)
    """key=value filters, all after one --filter, e.g. --filter env_id=TMaze-v0 seed=1 seed=2 (CSV: column=value)"""
    strip_prefixes: List[str] = field(default_factory=lambda: ["ppo_", "sweep_"])
    """prefixes removed from exp_names to name the lines (event files only)"""
    strip_suffixes: List[str] = field(default_factory=list)
    """suffixes removed from exp_names (after their _L<n>) to name the lines, e.g. _carriedTrue (event files only)"""
    drop: List[str] = field(default_factory=list)
    """parts removed from exp_names wherever they stand, e.g. _carriedTrue: passive_agalite_L100_carriedTrue_gate_bias-3
    -> agalite_gate_bias-3 (event files only)"""
    line_columns: List[str] = field(default_factory=lambda: ["script"])
    """CSV only: the columns that name a line: the first one's value, then _<column><value> for each further column
    with a value (rows without one, e.g. the default gate bias, stay on the plain script's line)"""
    plain_values: List[str] = field(default_factory=list)
    """COLUMN=VALUE, CSV only: a value that names no line, as an empty one does (e.g. adam_eps=1e-05, the value most
    rows ran with: those rows stay on the plain script's line)"""
    rename: List[str] = field(default_factory=list)
    """NAME=NEW: lines (after the prefixes, suffixes and drops, or as --line-columns names them) renamed; several
    names may share one line, e.g. agalite_gate_bias-5=agalite_gate_bias~-lnL agalite_gate_bias-6.5=agalite_gate_bias~-lnL"""
    ci: Literal["bootstrap", "t"] = "bootstrap"
    """confidence interval of the mean over seeds: percentile bootstrap or Student t (both 95%)"""
    n_boot: int = 2000
    """bootstrap resamples"""
    show_unsolved: bool = False
    """--metric solved_at with --csv: also draw each row without a solved_at as a cross at the steps it ran (its
    `steps` column: not solved within them); crosses do not enter the means"""
    logx: bool = False
    """log-scale x axis"""
    logy: bool = False
    """log-scale y axis"""
    out: str = "plots/results/sweep"
    """output path without extension: <out>.png and <out>.pdf are written"""


def line_name(exp_name, prefixes, suffixes=(), drop=()):
    """sweep_agalite_L60 -> agalite, ppo_lstm -> lstm (with the default prefixes); the corridor-length token _L<n>
    goes wherever it is (passive_agalite_L50_carriedTrue -> agalite_carriedTrue, or agalite with suffix
    _carriedTrue)."""
    name = re.sub(r"_L\d+(?=_|$)", "", exp_name)
    for part in drop:
        name = re.sub(re.escape(part) + r"(?=_|$)", "", name)
    for prefix in prefixes:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def as_number(value, where):
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{value!r} (in {where}) is not a number: the swept value and final values must be numeric") from None


def points_from_runs(args):
    """[(line, x, seed, final value)] from the event files."""
    tag = METRICS[args.metric][0]
    runs = tb_runs.load_runs(args.runs_dir, tb_runs.parse_filters(args.filter))
    points, no_x, no_tag, unsolved = [], [], [], []
    renames = dict(r.split("=", 1) for r in args.rename)
    for run in runs:
        x = tb_runs.run_field(run, args.x_key)
        if x is None:
            no_x.append(run["dir"])
            continue
        if tag not in run["scalars"] or len(run["scalars"][tag][1]) == 0:
            no_tag.append(run["dir"])
            continue
        others = {k: v for k, v in run["env_kwargs"].items() if k != args.x_key}
        env = run["env_id"] + (f" {json.dumps(others, sort_keys=True)}" if others else "")
        if args.metric == "solved_at":
            value = tb_runs.first_solved_step(*run["scalars"][tag], args.solved_threshold, args.solved_window)
            if value is None:
                unsolved.append(run["dir"])
                continue
        else:
            value = tb_runs.final_value(run["scalars"][tag][1], args.final_frac)
        name = line_name(run["exp_name"], args.strip_prefixes, args.strip_suffixes, args.drop)
        points.append(((env, renames.get(name, name)), as_number(x, run["dir"]), run["seed"], value))
    if no_x:
        print(f"note: {len(no_x)} run(s) have no {args.x_key!r} in env_kwargs or hyperparameters; left out: {no_x}")
    if no_tag:
        print(f"note: {len(no_tag)} run(s) logged no {tag!r}; left out: {no_tag}")
    if unsolved:
        print(f"note: {len(unsolved)} run(s) never solved the task; left out: {unsolved}")
    if not points:
        raise ValueError(f"no run under {args.runs_dir!r} has both {args.x_key!r} and {tag!r}")
    return points


def csv_rows(args, columns):
    """The CSV's rows that pass --filter, each with its line name under "_line"; checks that `columns` exist."""
    if not os.path.isfile(args.csv):
        raise ValueError(f"CSV {args.csv!r} does not exist")
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"CSV {args.csv!r} has no rows")
    missing = [c for c in (*args.line_columns, args.x_key, "seed", *columns) if c not in rows[0]]
    if missing:
        raise ValueError(f"CSV {args.csv!r} lacks the column(s) {missing}; it has {list(rows[0])}")
    filters = tb_runs.parse_filters(args.filter)
    for key in filters:
        if key not in rows[0]:
            raise ValueError(f"filter key {key!r} is not a column of {args.csv!r}: {list(rows[0])}")
    rows = [r for r in rows if all(r[k] in allowed for k, allowed in filters.items())]
    renames = dict(r.split("=", 1) for r in args.rename)
    bad = [v for v in args.plain_values if "=" not in v or v.split("=", 1)[0] not in rows[0]]
    if bad:
        raise ValueError(f"--plain-values {bad}: expected COLUMN=VALUE with COLUMN one of {list(rows[0])}")
    plain = dict(v.split("=", 1) for v in args.plain_values)
    first, *others = args.line_columns
    for row in rows:  # named as the sweep names its runs: agalite_gate_bias-4_learning_rate0.001
        name = row[first] + "".join(f"_{c}{row[c]}" for c in others if row[c] not in ("", None, plain.get(c, "")))
        row["_line"] = ("", renames.get(name, name))
    return rows


def points_from_csv(args):
    """[(line, x, seed, final value)] from the sweep summary CSV."""
    column = METRICS[args.metric][1]
    rows = csv_rows(args, [column])
    points = [(r["_line"], as_number(r[args.x_key], args.csv), r["seed"], as_number(r[column], args.csv)) for r in rows if r[column] not in ("", "nan")]
    if len(points) < len(rows):
        print(f"note: {len(rows) - len(points)} row(s) have no {column}" + (" (never solved)" if column == "solved_at" else "") + "; left out")
    if not points:
        raise ValueError(f"no row of {args.csv!r} (after the filters) has a value in {column!r}")
    return points


def unsolved_from_csv(args):
    """[(line, x, seed, steps run)] of the CSV's runs without a solved_at (--show-unsolved)."""
    rows = csv_rows(args, ["solved_at", "steps"])
    return [(r["_line"], as_number(r[args.x_key], args.csv), r["seed"], as_number(r["steps"], args.csv))
            for r in rows if r["solved_at"] in ("", "nan") and r["steps"] not in ("", "nan")]


def spread_crosses(unsolved, logx, width=0.02, all_x=()):
    """The x at which to draw each unsolved run: the runs at one x side by side, `width` of a decade apart on a log
    axis (of the x range on a linear one: that of all_x, the figure's x values, and the unsolved runs'), in the order
    given, so that runs capped at the same steps (say two seeds at a 3M cap) do not hide each other."""
    xs = [p[1] for p in unsolved]
    every_x = xs + list(all_x)
    span = (max(every_x) - min(every_x) if every_x else 0.0) or 1.0
    at_x, placed, out = Counter(xs), Counter(), []
    for x in xs:
        offset = (placed[x] - (at_x[x] - 1) / 2) * width  # slots centred on x
        placed[x] += 1
        out.append(x * 10 ** offset if logx else x + offset * span)
    return out


def main(args):
    """Draws the figure; returns the paths written. Raises ValueError on bad input."""
    if not 0 < args.final_frac <= 1:
        raise ValueError("--final-frac must be in (0, 1]")
    if args.show_unsolved and not (args.csv and args.metric == "solved_at"):
        raise ValueError("--show-unsolved draws the steps run from the CSV: use it with --csv and --metric solved_at")
    points = points_from_csv(args) if args.csv else points_from_runs(args)
    unsolved = unsolved_from_csv(args) if args.show_unsolved else []
    lines = sorted({p[0] for p in points + unsolved})
    unsolved = sorted(unsolved, key=lambda p: lines.index(p[0]))  # side by side at an x in the legend's order
    drawn_x = spread_crosses(unsolved, args.logx, all_x=[p[1] for p in points])
    several_envs = len({env for env, _ in lines}) > 1
    fig, ax = plt.subplots(figsize=(8, 4.5) if len(lines) > 6 else (6, 4))
    print(f"{'line':<30} {args.x_key:>16} {'n':>3} {'mean':>8} {'ci_low':>8} {'ci_high':>8}")
    for i, line in enumerate(lines):
        color = plt.cm.tab10(i % 10) if len(lines) <= 10 else plt.cm.tab20(i % 20)  # (one colour per line)
        label = f"{line[1]} [{line[0]}]" if several_envs else line[1]
        crosses = [(p, at) for p, at in zip(unsolved, drawn_x) if p[0] == line]
        if crosses:
            ax.scatter([at for _, at in crosses], [p[3] for p, _ in crosses], color=color, marker="x", s=40,
                       label=None if any(p[0] == line for p in points) else f"{label} (none solved)")
            for (_, x, seed, steps), _ in crosses:
                print(f"{label:<30} {x:>16g}   not solved within {steps:g} steps (seed {seed})")
        xs = sorted({p[1] for p in points if p[0] == line})
        if not xs:
            continue
        means, lows, highs, ns = [], [], [], []
        for x in xs:
            values = np.array([p[3] for p in points if p[0] == line and p[1] == x])
            mean, low, high = tb_runs.mean_ci(values, args.ci, n_boot=args.n_boot)
            means.append(mean), lows.append(low), highs.append(high), ns.append(len(values))
            ax.scatter(np.full(len(values), x), values, color=color, s=10, alpha=0.4, linewidth=0)
            print(f"{label:<30} {x:>16g} {len(values):>3} {mean:>8.3f} {low:>8.3f} {high:>8.3f}")
        means, lows, highs = np.array(means), np.array(lows), np.array(highs)
        n_text = f"n={ns[0]}" if len(set(ns)) == 1 else f"n={min(ns)}-{max(ns)}"
        ax.errorbar(xs, means, yerr=[means - lows, highs - means], color=color, marker="o", capsize=4, label=f"{label} ({n_text})")
    name = METRICS[args.metric][2]
    ax.set_xlabel(args.x_key.replace("_", " "))
    ax.set_ylabel(name)
    if args.metric == "success":
        ax.set_ylim(-0.03, 1.03)
    if args.logx:
        ax.set_xscale("log")
    if args.logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(lines) > 6:  # beside the axes, where it hides no point
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        ax.legend(fontsize=8)
    if args.metric == "solved_at":
        how = "Steps to solve: " + ("as in the sweep CSV" if args.csv else f"the first step at which the mean success of "
                                    f"{args.solved_window} logged points reaches {args.solved_threshold}; unsolved runs left out")
        if unsolved:
            how += "; crosses: runs not solved within the steps they ran (not in the means; those at one x side by side)"
    else:
        how = "Final value: " + ("as in the sweep CSV" if args.csv else f"mean of the last {args.final_frac:.0%} of each run's logged points")
    caption = (f"{how}. Points: mean over seeds (n in the legend); error bars: "
               f"{tb_runs.ci_caption(args.ci, n_boot=args.n_boot)}; dots: single seeds.")
    return tb_runs.save_figure(fig, args.out, caption, caption_size=7)


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except ValueError as e:
        raise SystemExit(f"error: {e}")
