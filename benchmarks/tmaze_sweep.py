"""T-Maze sweep: {agalite, gtrxl, lstm} x corridor lengths x seeds, several runs at a time, resumable.

Every run is `python ppo_<script>.py --env-id TMaze-v0 --env-kwargs '{"corridor_length": L}' --seed S
--total-timesteps N --exp-name <tag>_<script>_L<L>` plus the script's entry in SCRIPT_ARGS below plus every
argument given after `--` on this command line, started in `--workdir` (the scripts write their TensorBoard
runs to runs/ under their working directory), with its stdout and stderr in `<log-dir>/<exp_name>__<seed>.log`.
`--jobs` runs go at a time (default 2); each gets OMP_NUM_THREADS = cores / jobs unless it is already set.

Finished = the process exited with status 0 and its run directory runs/<env_id>__<exp_name>__<seed>__<time>/
exists: the runner then writes the marker `<log-dir>/<exp_name>__<seed>.done` (JSON: the arguments, the run
directory, the wall time). A run with a marker is skipped, so running the same command again resumes an
interrupted or partly failed sweep. A marker written for other arguments (say another --total-timesteps) stops
the sweep with a message rather than mixing the two: use another --tag (a new set of exp_names), or delete the
markers. A run that failed or was interrupted has no marker and runs again from the start (its partial run
directory stays; the plotting tools use the newest directory of an (exp_name, seed)).

At the end the summary CSV (default <workdir>/runs/<tag>_summary.csv) gets one row per finished run of the grid:
script, corridor_length, seed, final_success, final_return (mean of the last --final-frac of the run's
logged points of charts/success_rate and charts/episodic_return), solved_at (the first step at which the mean
success of --solved-window consecutive logged points reaches --solved-threshold; empty if never), sps (the
last logged charts/SPS), steps (the last logged step), wall_time_s, run_dir. The exit status is 1 if a run failed.

Usage:
    python benchmarks/tmaze_sweep.py --scripts agalite gtrxl lstm --lengths 10 60 120 --seeds 1 2 --total-timesteps 500000 --jobs 2
    python benchmarks/tmaze_sweep.py --scripts agalite lstm --lengths 60 --seeds 1 2 3 --dry-run -- --num-envs 8
    python plots/sweep_plot.py --csv runs/sweep_summary.csv --out plots/results/tmaze_sweep
"""
import csv
import glob
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import List

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plots"))
import tb_runs  # noqa: E402  (plots/tb_runs.py: reads the event files)

# Extra arguments for every run of a script (tune here; arguments after `--` on the command line come after
# these and so win). GTrXL attends over the last --memory-len steps (default 128): for corridors longer than
# about 120 it cannot see the cue at the junction unless the memory is made longer, e.g. ["--memory-len", "256"].
SCRIPT_ARGS = {
    "agalite": [],
    "gtrxl": [],
    "lstm": [],
}
CSV_COLUMNS = ["script", "corridor_length", "seed", "final_success", "final_return", "solved_at", "sps", "steps",
               "wall_time_s", "run_dir"]


@dataclass
class Args:
    scripts: List[str] = field(default_factory=lambda: ["agalite", "gtrxl", "lstm"])
    """architectures: runs ppo_<script>.py from --script-dir"""
    lengths: List[int] = field(default_factory=lambda: [10, 60, 120])
    """T-Maze corridor lengths"""
    seeds: List[int] = field(default_factory=lambda: [1, 2])
    """seeds of every (script, length)"""
    total_timesteps: int = 500_000
    """--total-timesteps of every run"""
    jobs: int = 2
    """runs at a time"""
    env_id: str = "TMaze-v0"
    """the environment id"""
    tag: str = "sweep"
    """exp_name of a run = <tag>_<script>_L<length>; a new tag starts a new sweep next to the old one"""
    workdir: str = ROOT
    """working directory of the runs: they write to <workdir>/runs/"""
    script_dir: str = ROOT
    """folder holding ppo_<script>.py"""
    python_cmd: str = sys.executable
    """command that runs a script (split like a shell would, e.g. 'python3 -X faulthandler')"""
    log_dir: str = ""
    """logs and .done markers (default <workdir>/runs/<tag>_logs)"""
    summary_csv: str = ""
    """summary CSV (default <workdir>/runs/<tag>_summary.csv)"""
    final_frac: float = 0.1
    """final value of a run = mean of this last fraction of its logged points"""
    solved_threshold: float = 0.9
    """solved_at: the mean success that counts as solved ..."""
    solved_window: int = 5
    """... over this many consecutive logged points (one per update)"""
    threads_per_job: int = 0
    """OMP_NUM_THREADS of each run when not set already (0: cores // jobs, at least 1)"""
    poll_s: float = 1.0
    """seconds between checks of the running processes"""
    dry_run: bool = False
    """print what would run and what is skipped, run nothing"""


def plan(args, extra_args):
    """One dict per (script, length, seed): its exp_name, script arguments, log and marker paths."""
    runs = []
    for script in args.scripts:
        for length in args.lengths:
            for seed in args.seeds:
                exp_name = f"{args.tag}_{script}_L{length}"
                script_args = [
                    "--env-id", args.env_id,
                    "--env-kwargs", json.dumps({"corridor_length": length}),
                    "--seed", str(seed),
                    "--total-timesteps", str(args.total_timesteps),
                    "--exp-name", exp_name,
                ] + SCRIPT_ARGS.get(script, []) + list(extra_args)
                runs.append({
                    "script": script, "length": length, "seed": seed, "exp_name": exp_name,
                    "path": os.path.join(args.script_dir, f"ppo_{script}.py"), "args": script_args,
                    "log": os.path.join(args.log_dir, f"{exp_name}__{seed}.log"),
                    "marker": os.path.join(args.log_dir, f"{exp_name}__{seed}.done"),
                })
    return runs


def read_marker(run, workdir):
    """The marker of a finished run, or None. Raises ValueError if it was written for other arguments."""
    if not os.path.isfile(run["marker"]):
        return None
    try:
        with open(run["marker"]) as f:
            marker = json.load(f)
    except json.JSONDecodeError:
        raise ValueError(f"{run['marker']} is not valid JSON; delete it to run {run['exp_name']} seed {run['seed']} again") from None
    if marker.get("args") != run["args"]:
        raise ValueError(
            f"{run['marker']} marks {run['exp_name']} seed {run['seed']} finished with other arguments:\n"
            f"  then: {shlex.join(marker.get('args', []))}\n  now:  {shlex.join(run['args'])}\n"
            "use another --tag for the new settings, or delete the marker(s) to run again"
        )
    if not os.path.isdir(os.path.join(workdir, marker["run_dir"])):
        print(f"note: {run['marker']} names {marker['run_dir']}, which is gone; running it again")
        return None
    return marker


def find_run_dir(args, run, started):
    """The newest runs/<env_id>__<exp_name>__<seed>__<time> made since `started` (relative to workdir), or None."""
    pattern = os.path.join(args.workdir, "runs", f"{glob.escape(args.env_id)}__{glob.escape(run['exp_name'])}__{run['seed']}__*")
    found = []
    for path in glob.glob(pattern):
        suffix = path.rsplit("__", 1)[-1]
        if os.path.isdir(path) and suffix.isdigit() and int(suffix) >= int(started) - 1:
            found.append((int(suffix), path))
    return os.path.relpath(max(found)[1], args.workdir) if found else None


def summary_row(args, run, marker):
    loaded = tb_runs.load_run(os.path.join(args.workdir, marker["run_dir"]))
    scalars = loaded["scalars"]

    def values(tag):
        return scalars[tag][1] if tag in scalars else ()

    def final(tag):
        return round(tb_runs.final_value(values(tag), args.final_frac), 6) if len(values(tag)) else ""

    solved_at = None
    if "charts/success_rate" in scalars:
        solved_at = tb_runs.first_solved_step(*scalars["charts/success_rate"], args.solved_threshold, args.solved_window)
    steps = max((int(s[-1]) for s, _ in scalars.values() if len(s)), default=0)
    return {"script": run["script"], "corridor_length": run["length"], "seed": run["seed"],
            "final_success": final("charts/success_rate"), "final_return": final("charts/episodic_return"),
            "solved_at": "" if solved_at is None else solved_at,
            "sps": round(float(values("charts/SPS")[-1])) if len(values("charts/SPS")) else "",
            "steps": steps, "wall_time_s": round(marker["wall_time_s"], 1), "run_dir": marker["run_dir"]}


def main(args, extra_args=()):
    """Runs the sweep; returns {"ran": [...], "skipped": [...], "failed": [...]} (exp_name__seed names)."""
    args.log_dir = args.log_dir or os.path.join(args.workdir, "runs", f"{args.tag}_logs")
    args.summary_csv = args.summary_csv or os.path.join(args.workdir, "runs", f"{args.tag}_summary.csv")
    if args.jobs < 1 or not args.scripts or not args.lengths or not args.seeds:
        raise ValueError("need --jobs >= 1 and at least one of each of --scripts, --lengths, --seeds")
    missing = [s for s in args.scripts if not os.path.isfile(os.path.join(args.script_dir, f"ppo_{s}.py"))]
    if missing:
        present = sorted(n[4:-3] for n in os.listdir(args.script_dir) if n.startswith("ppo_") and n.endswith(".py"))
        raise ValueError(f"no ppo_<script>.py in {args.script_dir} for {missing}; scripts there: {present}")
    python_cmd = shlex.split(args.python_cmd)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(args.threads_per_job or max(1, (os.cpu_count() or 1) // args.jobs)))

    runs = plan(args, extra_args)
    markers = {run["marker"]: read_marker(run, args.workdir) for run in runs}  # all checked before anything starts
    todo = [run for run in runs if markers[run["marker"]] is None]
    skipped = [f"{r['exp_name']}__{r['seed']}" for r in runs if markers[r["marker"]] is not None]
    print(f"{len(runs)} runs in the grid: {len(skipped)} finished already, {len(todo)} to run, {args.jobs} at a time")
    if args.dry_run:
        for run in todo:
            print(f"would run: (cd {shlex.quote(args.workdir)} && {shlex.join(python_cmd + [run['path']] + run['args'])})")
        return {"ran": [], "skipped": skipped, "failed": []}

    os.makedirs(args.log_dir, exist_ok=True)
    ran, failed, running = [], [], []
    pending = list(todo)
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                run = pending.pop(0)
                cmd = python_cmd + [run["path"]] + run["args"]
                log = open(run["log"], "w")
                log.write(f"# {shlex.join(cmd)}\n# cwd {args.workdir}\n")
                log.flush()
                started = time.time()
                proc = subprocess.Popen(cmd, cwd=args.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
                running.append((run, proc, log, started))
                print(f"started {run['exp_name']} seed {run['seed']} (log {run['log']})", flush=True)
            time.sleep(args.poll_s)
            for item in list(running):
                run, proc, log, started = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                log.close()
                name, wall = f"{run['exp_name']}__{run['seed']}", time.time() - started
                run_dir = find_run_dir(args, run, started) if proc.returncode == 0 else None
                if run_dir is None:
                    why = f"exit status {proc.returncode}" if proc.returncode else "exited 0 but wrote no run directory under runs/"
                    with open(run["log"]) as f:
                        tail = "".join(f.readlines()[-5:])
                    print(f"FAILED {name} ({why}); last lines of {run['log']}:\n{tail}", flush=True)
                    failed.append(name)
                    continue
                with open(run["marker"], "w") as f:
                    json.dump({"args": run["args"], "run_dir": run_dir, "wall_time_s": wall, "returncode": 0,
                               "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=1)
                ran.append(name)
                print(f"finished {name} in {wall / 60:.1f} min -> {run_dir} ({len(ran) + len(failed)}/{len(todo)})", flush=True)
    except KeyboardInterrupt:
        for run, proc, log, _ in running:
            proc.terminate()
        for run, proc, log, _ in running:
            proc.wait()
            log.close()
        raise SystemExit("interrupted: the runs in progress were stopped; run the same command again to resume")

    rows = []
    for run in runs:
        marker = read_marker(run, args.workdir)
        if marker is not None:
            rows.append(summary_row(args, run, marker))
    os.makedirs(os.path.dirname(os.path.abspath(args.summary_csv)), exist_ok=True)
    with open(args.summary_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(f"{row['script']:>8} L={row['corridor_length']:<4} seed {row['seed']:<3} success {row['final_success']!s:>8} "
              f"return {row['final_return']!s:>9} solved at {row['solved_at'] or 'never':>8} steps {row['steps']:>9} {row['wall_time_s']:>8} s")
    print(f"wrote {args.summary_csv} ({len(rows)} finished runs of {len(runs)}); failed this time: {failed or 'none'}")
    return {"ran": ran, "skipped": skipped, "failed": failed}


if __name__ == "__main__":
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    try:
        result = main(tyro.cli(Args, args=argv), extra)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    sys.exit(1 if result["failed"] else 0)
