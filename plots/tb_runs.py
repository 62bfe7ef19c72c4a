"""Shared helpers of the plotting tools: read the scripts' TensorBoard runs, filter them, and the statistics.

Used by plots/learning_curves.py, plots/sweep_plot.py and benchmarks/sweep.py; not a command itself. A figure's
points can be kept as a CSV (save_points_csv) and read back in place of the runs (load_points_csv).

A run is a directory `runs/<env_id>__<exp_name>__<seed>__<unix_time>/` holding TensorBoard event files, as
every ppo_*.py script writes it. Its identity (env id, env kwargs, exp_name, seed) is read from the
`hyperparameters` text summary (the `|param|value|` table the scripts log); when that text is missing, env id,
exp_name and seed come from the directory name and env kwargs are taken as empty.

Statistics (over seeds, at each x):
* mean_ci(..., method="bootstrap"): the percentile bootstrap 95% confidence interval of the mean over seeds
  (resample the seeds with replacement `n_boot` times, take the 2.5% and 97.5% percentiles of the resampled
  means; fixed random seed, so a plot is reproducible). With very few seeds it is narrow: with 2 seeds it is
  the range of the two values.
* mean_ci(..., method="t"): Student's t interval, mean +- t_{0.975, n-1} * std(ddof=1) / sqrt(n). With 2 seeds
  t_{0.975, 1} = 12.71, so the band is very wide: it says honestly how little 2 seeds tell.
With one seed neither interval exists: the band collapses onto the mean.
"""
import ast
import csv
import json
import math
import os
import re

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

RUN_NAME = re.compile(r"^(?P<env_id>.+?)__(?P<exp_name>.+)__(?P<seed>-?\d+)__(?P<time>\d+)$")
# load every scalar point and the text summaries; skip what the plots never use
SIZE_GUIDANCE = {"scalars": 0, "tensors": 0, "images": 1, "audio": 1, "histograms": 1, "compressedHistograms": 1}


def find_run_dirs(root):
    """Every directory under `root` (itself included) that holds a TensorBoard event file, sorted."""
    if not os.path.isdir(root):
        raise ValueError(f"runs directory {root!r} does not exist")
    found = []
    for dirpath, _, filenames in os.walk(root):
        if any(name.startswith("events.out.tfevents.") for name in filenames):
            found.append(dirpath)
    return sorted(found)


def parse_hparams(text):
    """The scripts' `|param|value|` markdown table as a dict of strings (header and `|-|-|` rows dropped)."""
    params = {}
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|")) or line.count("|") < 3:
            continue
        key, value = line[1:-1].split("|", 1)  # a value may itself hold a "|"
        key, value = key.strip(), value.strip()
        if key in ("param", "-") or set(key) <= {"-", ":"}:
            continue
        params[key] = value
    return params


def parse_env_kwargs(text):
    """env_kwargs as logged: a JSON object (the scripts' argument) or a Python dict repr; {} when empty."""
    if text in (None, "", "None"):
        return {}
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(f"cannot read env_kwargs {text!r} (expected a JSON object like '{{\"corridor_length\": 60}}')")


def load_run(run_dir):
    """Reads one run: its identity and every scalar tag as (steps, values) arrays sorted by step."""
    acc = EventAccumulator(run_dir, size_guidance=SIZE_GUIDANCE)
    acc.Reload()
    tags = acc.Tags()
    hparams = {}
    if "hyperparameters/text_summary" in tags.get("tensors", []):
        events = acc.Tensors("hyperparameters/text_summary")
        text = tensor_util.make_ndarray(events[-1].tensor_proto).flatten()[0]
        hparams = parse_hparams(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    match = RUN_NAME.match(os.path.basename(os.path.normpath(run_dir)))
    from_name = match.groupdict() if match else {}
    run = {
        "dir": run_dir,
        "env_id": hparams.get("env_id", from_name.get("env_id", "?")),
        "exp_name": hparams.get("exp_name", from_name.get("exp_name", os.path.basename(run_dir))),
        "seed": hparams.get("seed", from_name.get("seed", "?")),
        "time": int(from_name.get("time", 0)),
        "env_kwargs": parse_env_kwargs(hparams.get("env_kwargs")),
        "hparams": hparams,
        "scalars": {},
    }
    for tag in tags.get("scalars", []):
        events = sorted(acc.Scalars(tag), key=lambda e: e.step)
        steps = np.array([e.step for e in events], dtype=np.float64)
        values = np.array([e.value for e in events], dtype=np.float64)
        run["scalars"][tag] = (steps, values)
    return run


def parse_filters(filters):
    """["corridor_length=60", "exp_name=ppo_lstm", "exp_name=ppo_agalite"] -> {key: [allowed values]}.

    Filters with different keys must all hold; several values for the same key are alternatives."""
    parsed = {}
    for item in filters or []:
        if "=" not in item:
            raise ValueError(f"bad filter {item!r}: expected key=value, e.g. corridor_length=60 or exp_name=ppo_agalite")
        key, value = item.split("=", 1)
        parsed.setdefault(key.strip(), []).append(value.strip())
    return parsed


def run_field(run, key):
    """The value of `key` for a run as a string (env_kwargs first, then env_id/exp_name/seed, then any
    hyperparameter), or None when the run does not have it."""
    if key in run["env_kwargs"]:
        value = run["env_kwargs"][key]
        return value if isinstance(value, str) else json.dumps(value)
    if key in ("env_id", "exp_name", "seed"):
        return str(run[key])
    return run["hparams"].get(key)


def run_matches(run, filters):
    for key, allowed in filters.items():
        value = run_field(run, key)
        if value is None or value not in allowed:
            return False
    return True


def env_label(run):
    """Group label of a run's environment: the id, plus its env kwargs when there are any."""
    if not run["env_kwargs"]:
        return run["env_id"]
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(run["env_kwargs"].items()))
    return f"{run['env_id']} ({kwargs})"


def env_sort_key(run):
    """Orders environments by id, then env kwargs with numbers compared as numbers (corridor 10, 60, 120)."""
    items = []
    for key, value in sorted(run["env_kwargs"].items()):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        items.append((key, 0 if number else 1, value if number else 0, "" if number else str(value)))
    return (run["env_id"], tuple(items))


def load_runs(root, filters=None, log=print):
    """Loads every run under `root` that passes the filters. When one (env, env kwargs, exp_name, seed) has
    several runs (a run started again), keeps the newest and says so. Raises ValueError when nothing is left."""
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise ValueError(f"no TensorBoard runs found under {root!r} (expected runs/<env_id>__<exp_name>__<seed>__<time>/events.out.tfevents.*)")
    filters = filters or {}
    runs = [load_run(d) for d in run_dirs]
    kept = [r for r in runs if run_matches(r, filters)]
    if not kept:
        keys = sorted({k for r in runs for k in r["env_kwargs"]} | {"env_id", "exp_name", "seed"})
        seen = {k: sorted({str(run_field(r, k)) for r in runs}) for k in filters}
        raise ValueError(f"none of the {len(runs)} runs under {root!r} passes the filters {filters}; values present: {seen}; filterable keys include {keys} and every hyperparameter")
    newest = {}
    for run in kept:
        key = (run["env_id"], json.dumps(run["env_kwargs"], sort_keys=True), run["exp_name"], str(run["seed"]))
        if key in newest:
            older, newer = sorted([newest[key], run], key=lambda r: (r["time"], r["dir"]))
            log(f"note: {older['dir']} and {newer['dir']} are the same run (env, exp_name, seed); using the newer")
            run = newer
        newest[key] = run
    return sorted(newest.values(), key=lambda r: (env_sort_key(r), r["exp_name"], str(r["seed"])))


def unfinished(run):
    """'step S of T' when the run's log stops short of its last iteration (still going, or killed), else None. A run
    whose hyperparameters do not say its budget, or one that may stop early (--stop-at-success), counts as finished."""
    hp = run["hparams"]
    try:
        batch = int(hp["num_envs"]) * int(hp["num_steps"])
        last_iteration = int(hp["total_timesteps"]) // batch * batch
        if float(hp.get("stop_at_success", 0) or 0) > 0:
            return None
    except (KeyError, ValueError):
        return None
    logged = max((steps[-1] for steps, _ in run["scalars"].values() if len(steps)), default=0)
    return f"step {int(logged):,} of {last_iteration:,}" if logged < last_iteration else None


def finished_runs(runs, log=print):
    """The runs that reached their last iteration; each one left out is named."""
    kept = []
    for run in runs:
        why = unfinished(run)
        if why:
            log(f"note: {run['dir']} is not finished ({why}); left out")
        else:
            kept.append(run)
    return kept


POINTS_CSV_COLUMNS = ["env_id", "env_kwargs", "exp_name", "seed", "metric", "step", "value"]


def run_key(run):
    """A run's identity in a points CSV: (env_id, env kwargs as JSON, exp_name, seed), all strings."""
    kwargs = json.dumps(run["env_kwargs"], sort_keys=True) if run["env_kwargs"] else ""
    return (run["env_id"], kwargs, run["exp_name"], str(run["seed"]))


def row_key(row):
    """The run_key of a points-CSV row."""
    return (row["env_id"], row["env_kwargs"], row["exp_name"], row["seed"])


def read_csv_rows(path, columns):
    """The rows (dicts of strings) of a CSV one of the plotting tools wrote with exactly these `columns`."""
    if not os.path.isfile(path):
        raise ValueError(f"CSV {path!r} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != columns:
            raise ValueError(f"CSV {path!r} has the columns {reader.fieldnames}, not {columns} (written by --save-csv)")
        return list(reader)


def save_points_csv(runs, metrics, path, keep_other_runs=False):
    """Writes the runs' logged points of `metrics` to `path`, one row per point (columns POINTS_CSV_COLUMNS), so
    that a figure can be drawn again without the run directories (which do not outlive a machine). With
    `keep_other_runs` the rows `path` already holds for runs not among `runs` (made on another machine or in an
    earlier session) are kept, so that a figure's CSV grows run by run; a run among `runs` replaces its old rows."""
    kept = []
    if keep_other_runs and os.path.isfile(path):
        new_keys = {run_key(run) for run in runs}
        kept = [row for row in read_csv_rows(path, POINTS_CSV_COLUMNS) if row_key(row) not in new_keys]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(POINTS_CSV_COLUMNS)
        writer.writerows([row[c] for c in POINTS_CSV_COLUMNS] for row in kept)
        for run in runs:
            env_id, kwargs, exp_name, seed = run_key(run)
            for metric in metrics:
                steps, values = run["scalars"].get(metric, ((), ()))
                for step, value in zip(steps, values):
                    writer.writerow([env_id, kwargs, exp_name, seed, metric, int(step), f"{value:.7g}"])
    print(f"wrote {path}" + (f" (and kept the {len({tuple(r[c] for c in POINTS_CSV_COLUMNS[:4]) for r in kept})} other runs it held)" if keep_other_runs else ""))


def load_points_csv(path, filters=None):
    """Runs as load_runs returns them, read from a CSV save_points_csv wrote; the filters apply to env kwargs,
    env_id, exp_name and seed (the CSV holds no other hyperparameters). Raises ValueError when nothing is left."""
    points = {}
    for row in read_csv_rows(path, POINTS_CSV_COLUMNS):
        points.setdefault(row_key(row), {}).setdefault(row["metric"], []).append((float(row["step"]), float(row["value"])))
    runs = []
    for (env_id, kwargs, exp_name, seed), metrics in points.items():
        run = {"dir": path, "env_id": env_id, "exp_name": exp_name, "seed": seed, "time": 0, "env_kwargs": parse_env_kwargs(kwargs), "hparams": {}, "scalars": {}}
        for metric, pairs in metrics.items():
            pairs.sort()
            run["scalars"][metric] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
        if run_matches(run, filters or {}):
            runs.append(run)
    if not runs:
        raise ValueError(f"none of the {len(points)} runs in {path!r} passes the filters {filters}")
    return sorted(runs, key=lambda r: (env_sort_key(r), r["exp_name"], str(r["seed"])))


def smooth(values, window):
    """Trailing moving average over `window` points; the first points average over what exists so far."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (csum[idx] - csum[start]) / (idx - start)


def final_value(values, frac):
    """Mean of the last `frac` of a run's points (at least one point)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan")
    n = max(1, int(math.ceil(frac * len(values))))
    return float(np.mean(values[-n:]))


def first_solved_step(steps, values, threshold=0.9, window=5):
    """The step of the first logged point at which the mean of the last `window` points (this one
    included) reaches `threshold`, or None if that never happens (the "solved at" of docs/ and the sweeps' summaries)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return None
    means = np.convolve(values, np.ones(window) / window, mode="valid")  # means[i]: points i .. i+window-1
    hits = np.nonzero(means >= threshold)[0]
    return int(steps[hits[0] + window - 1]) if len(hits) else None


def t_interval_factor(confidence, df):
    """Two-sided Student t quantile t_{(1+confidence)/2, df}, found by bisection on the closed-form
    P(|T| < t) for an integer number of degrees of freedom (no scipy needed)."""
    if df < 1:
        raise ValueError("the t interval needs at least 2 samples")

    def central_prob(t):  # P(|T| < t), T ~ Student t with df degrees of freedom
        theta = math.atan(t / math.sqrt(df))
        s, c = math.sin(theta), math.cos(theta)
        if df % 2 == 1:
            total, term = 0.0, c
            for k in range(1, (df - 1) // 2 + 1):  # c + (2/3) c^3 + (2*4)/(3*5) c^5 + ...
                total += term
                term *= c * c * (2 * k) / (2 * k + 1)
            return (2 / math.pi) * (theta + s * total) if df > 1 else 2 * theta / math.pi
        total, term = 0.0, 1.0
        for k in range(1, df // 2 + 1):  # 1 + (1/2) c^2 + (1*3)/(2*4) c^4 + ...
            total += term
            term *= c * c * (2 * k - 1) / (2 * k)
        return s * total

    lo, hi = 0.0, 1.0
    while central_prob(hi) < confidence:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if central_prob(mid) < confidence else (lo, mid)
    return (lo + hi) / 2


def mean_ci(samples, method="bootstrap", confidence=0.95, n_boot=2000, seed=0):
    """Mean over seeds and a confidence interval of that mean, column by column.

    samples: array (n_seeds, n_points) (or (n_seeds,)). Returns (mean, low, high), each (n_points,).
    method "bootstrap": percentile bootstrap over seeds; "t": Student t interval (see the module docstring)."""
    samples = np.asarray(samples, dtype=np.float64)
    squeeze = samples.ndim == 1
    samples = samples.reshape(len(samples), -1)
    n = samples.shape[0]
    if n == 0:
        raise ValueError("no samples")
    mean = samples.mean(axis=0)
    if n == 1:
        low, high = mean.copy(), mean.copy()
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)  # how often each seed is drawn
        boot_means = counts @ samples / n  # (n_boot, n_points)
        alpha = (1 - confidence) / 2
        low, high = np.quantile(boot_means, [alpha, 1 - alpha], axis=0)
    elif method == "t":
        half = t_interval_factor(confidence, n - 1) * samples.std(axis=0, ddof=1) / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        raise ValueError(f"unknown CI method {method!r}: use 'bootstrap' or 't'")
    if squeeze:
        return float(mean[0]), float(low[0]), float(high[0])
    return mean, low, high


def ci_caption(method, confidence=0.95, n_boot=2000):
    if method == "bootstrap":
        return f"{confidence:.0%} percentile-bootstrap CI of the mean over seeds ({n_boot} resamples)"
    return f"{confidence:.0%} Student-t CI of the mean over seeds"


def save_figure(fig, out, caption=None, caption_size=8):
    """Saves `out`.png and `out`.pdf (a given .png/.pdf suffix is dropped), creating the folder, with `caption`
    under the panels; closes the figure and returns the paths."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if caption:
        fig.text(0.5, 0, caption, ha="center", va="top", fontsize=caption_size, wrap=True)
    base, ext = os.path.splitext(out)
    if ext.lower() not in (".png", ".pdf"):
        base = out
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    paths = [base + ".png", base + ".pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    print("wrote " + " and ".join(paths))
    return paths
