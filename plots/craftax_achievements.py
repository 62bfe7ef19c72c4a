"""Craftax's per-achievement success rates, one column per script: the Craftax paper's standard table.

Reads every run under `--runs-dir` that passes `--filter` (plots/tb_runs.py), takes each run's `achievements/<name>`
scalars (the share of the episodes ending in an update that unlocked the achievement, logged by every ppo_*.py
script on Craftax), and writes one row per achievement: its success rate in percent over the last `--final-frac` of
the run's logged points, averaged over the runs (seeds) of each column. Columns are the runs' exp_names (by default
the script's name, e.g. ppo_agalite; a sweep's tag_script). The last row is the mean over the achievements (the
share of all achievements unlocked, charts/achievements, the Craftax paper's score before its geometric mean).
Rows are in the game's order (envs/craftax.py, achievement_names) when craftax is installed, otherwise by name.

Writes `<out>.md` (the table, with the runs each column averages and the steps they reached) and `<out>.csv`
(rates in [0, 1]). The runs must all be of one environment (Classic and the full game have other achievements).
`--save-csv F` also writes each run's rates (one row per run and achievement) to F, and `--csv F` makes the table
from such a file instead of the runs: how the table's data is kept in the repository; `--keep-csv-runs` adds this
machine's finished runs to the ones F holds (a table whose runs are made a few at a time, on several machines).

Usage:
    python plots/craftax_achievements.py --runs-dir runs --filter env_id=Craftax-Symbolic-v1 --out plots/results/craftax_achievements
    python plots/craftax_achievements.py --runs-dir runs --save-csv plots/results/craftax_achievement_runs.csv --keep-csv-runs
    python plots/craftax_achievements.py --csv plots/results/craftax_achievement_runs.csv
"""
import csv
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tb_runs  # noqa: E402  (plots/tb_runs.py, next to this file)

PREFIX = "achievements/"


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder holding the runs (searched recursively for TensorBoard event files)"""
    out: str = "plots/results/craftax_achievements"
    """output path without extension: <out>.md and <out>.csv are written"""
    filter: List[str] = field(default_factory=list)
    """key=value filters, all after one --filter: --filter env_id=Craftax-Symbolic-v1 exp_name=craftax_here_agalite"""
    final_frac: float = 0.1
    """a run's rate: the mean of this last fraction of its logged points (at least one point)"""
    csv: Optional[str] = None
    """make the table from the runs' rates in this CSV (written by --save-csv) instead of --runs-dir"""
    save_csv: Optional[str] = None
    """also write each run's rates (columns RUN_RATES_COLUMNS) to this CSV, to make the table again with --csv"""
    keep_csv_runs: bool = False
    """with --save-csv: add the finished runs of --runs-dir to the runs the CSV already holds (one still going is left
    out, with a note), and tabulate them all"""

RUN_RATES_COLUMNS = ["env_id", "exp_name", "seed", "last_step", "achievement", "rate"]


def game_order(env_id, names):
    """The achievement names in the game's order when craftax is installed, else sorted."""
    try:
        sys.path.insert(0, ROOT)
        import envs

        order = envs.craftax.achievement_names(env_id)
    except (ImportError, ValueError):
        return sorted(names)
    return [n for n in order if n in names] + sorted(set(names) - set(order))


def run_rates(runs, final_frac):
    """One row per run and achievement (RUN_RATES_COLUMNS): the mean of the last `final_frac` of the run's points."""
    rows = []
    for run in runs:
        tags = {t[len(PREFIX):]: v for t, v in run["scalars"].items() if t.startswith(PREFIX)}
        last_step = int(max((steps[-1] for steps, _ in tags.values()), default=0))
        for name, (_, values) in tags.items():
            rows.append({"env_id": run["env_id"], "exp_name": run["exp_name"], "seed": str(run["seed"]),
                         "last_step": last_step, "achievement": name, "rate": tb_runs.final_value(values, final_frac)})
    if not rows:
        raise ValueError(f"none of the {len(runs)} runs logged {PREFIX}<name> scalars (Craftax runs of the ppo_*.py scripts do)")
    return rows


def save_rates_csv(rows, path, keep_other_runs):
    """Writes the runs' rates to `path`; with `keep_other_runs` the rows of runs not among `rows` are kept.
    Returns all the rows now in the file."""
    run_of = lambda row: (row["env_id"], row["exp_name"], str(row["seed"]))  # noqa: E731
    kept = []
    if keep_other_runs and os.path.isfile(path):
        new_runs = {run_of(row) for row in rows}
        kept = [row for row in load_rates_csv(path) if run_of(row) not in new_runs]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, RUN_RATES_COLUMNS)
        writer.writeheader()
        for row in kept + rows:
            writer.writerow({**row, "rate": f"{float(row['rate']):.6g}"})
    print(f"wrote {path}")
    return kept + rows


def load_rates_csv(path):
    rows = tb_runs.read_csv_rows(path, RUN_RATES_COLUMNS)
    return [{**row, "last_step": int(row["last_step"]), "rate": float(row["rate"])} for row in rows]


def table(rows):
    """{exp_name: {achievement: mean rate over its runs}}, the names in order, and per column the runs' last steps."""
    rates, info = {}, {}
    for row in rows:
        rates.setdefault(row["exp_name"], {}).setdefault(row["achievement"], []).append(row["rate"])
        info.setdefault(row["exp_name"], {})[row["seed"]] = row["last_step"]
    names = game_order(rows[0]["env_id"], {n for column in rates.values() for n in column})
    means = {col: {n: float(np.mean(column[n])) if n in column else float("nan") for n in names} for col, column in rates.items()}
    return means, names, {col: list(steps.values()) for col, steps in info.items()}


def main(args):
    """Writes the table; returns the paths written. Raises ValueError on bad input."""
    if not 0 < args.final_frac <= 1:
        raise ValueError(f"--final-frac ({args.final_frac}) must be in (0, 1]")
    if args.keep_csv_runs and not (args.save_csv and not args.csv):
        raise ValueError("--keep-csv-runs adds the runs of --runs-dir to the CSV of --save-csv (and not with --csv)")
    filters = tb_runs.parse_filters(args.filter)
    matches = lambda row: tb_runs.run_matches({"env_kwargs": {}, "hparams": {}, **row}, filters)  # noqa: E731
    if args.csv:
        rows = [row for row in load_rates_csv(args.csv) if matches(row)]
        if not rows:
            raise ValueError(f"no run in {args.csv!r} passes the filters {filters}")
    else:
        runs = tb_runs.load_runs(args.runs_dir, filters)
        rows = run_rates(tb_runs.finished_runs(runs) if args.keep_csv_runs else runs, args.final_frac)
    if args.save_csv:
        rows = save_rates_csv(rows, args.save_csv, args.keep_csv_runs)
        rows = [row for row in rows if matches(row)]
    env_ids = sorted({r["env_id"] for r in rows})
    if len(env_ids) > 1:
        raise ValueError(f"the runs are of several environments {env_ids}: choose one with --filter env_id=...")
    means, names, info = table(rows)
    columns = sorted(means)
    mean_row = {col: float(np.nanmean([means[col][n] for n in names])) for col in columns}
    lines = ["| achievement | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{100 * means[col][name]:.1f}" for col in columns) + " |")
    lines.append("| mean over achievements | " + " | ".join(f"{100 * mean_row[col]:.1f}" for col in columns) + " |")
    notes = [f"{env_ids[0]}: success rate (%) of each achievement over the last {args.final_frac:.0%} of each run's logged "
             "points (the share of the episodes ending in an update that unlocked it), mean over the runs of a column."]
    notes += [f"{col}: {len(info[col])} runs, to steps {', '.join(f'{s:,}' for s in info[col])}" for col in columns]
    base = os.path.splitext(args.out)[0] if args.out.endswith((".md", ".csv")) else args.out
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    with open(base + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["achievement"] + columns)
        for name in names:
            writer.writerow([name] + [f"{means[col][name]:.6g}" for col in columns])
        writer.writerow(["mean"] + [f"{mean_row[col]:.6g}" for col in columns])
    print("\n".join(lines + [""] + notes))
    print(f"wrote {base}.md and {base}.csv")
    return [base + ".md", base + ".csv"]


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except ValueError as e:
        raise SystemExit(f"error: {e}")
