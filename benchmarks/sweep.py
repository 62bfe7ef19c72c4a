"""Sweeps: scripts x a grid of options x seeds, several runs at a time here or as jobs on a SLURM cluster; resumable.

Every run is `python ppo_<script>.py --env-id ENV --seed S --total-timesteps N --exp-name <tag>_<script><grid>
--checkpoint-every K` plus its grid point's options plus the script's entry in SCRIPT_ARGS below plus every
argument given after `--` on this command line, started in `--workdir` (the scripts write their TensorBoard runs
to runs/ under their working directory), with its stdout and stderr in `<log-dir>/<exp_name>__<seed>.log`.
A grid entry `--grid KEY=V1,V2,...` multiplies the runs by its values: a KEY starting with `env.` goes into
--env-kwargs (`env.corridor_length=10,60`), any other KEY is a script option (`memory_len=64,128` -> --memory-len).
The exp_name appends `_<key><value>` per grid key (corridor_length is written `L`: sweep_agalite_L60).

Launchers (`--launcher`): `local` runs `--jobs` runs at a time on this machine (OMP_NUM_THREADS = cores / jobs
unless set); `slurm` submits one SLURM job array through submitit (`pip install submitit`), at most `--jobs` array
tasks at a time, with --slurm-partition / --slurm-time-min / --slurm-cpus / --slurm-gpus / --slurm-mem-gb; the
workdir must be on a filesystem the nodes share. `submitit-local` runs the same jobs through submitit's local
executor on this machine: a check of the SLURM path without a cluster. With `slurm`, the command returns after the
submission (`--wait` waits for the jobs and writes the summary); run it again after the jobs end for the summary.

Resuming: a run that finished writes the marker `<log-dir>/<exp_name>__<seed>.done` (JSON: its arguments, run
directory, wall time) and is skipped when the sweep is launched again. A run without a marker (killed, preempted,
out of time) continues from the newest checkpoint.pt of its run directories (`--resume`), or starts again if it
wrote none. Ctrl-C or SIGTERM stops a local sweep cleanly: its runs get SIGTERM, finish their update, write a
checkpoint and exit, and the sweep waits for them (a second Ctrl-C kills them). A marker written for other arguments
(say another --total-timesteps) stops the sweep with a message rather than mixing the two: use another --tag, or
delete the markers.

After each finished run (locally) and at the end, the summary CSV (default <workdir>/runs/<tag>_summary.csv) gets one
row per finished run of the grid (rows
of the tag's other grids stay, while their run directories exist; the columns are the union of the grids' keys):
script, one column per grid key, seed, final_success, final_return (mean of the last --final-frac of the run's
logged points of charts/success_rate and charts/episodic_return), solved_at (the first step at which the mean
success of --solved-window consecutive logged points reaches --solved-threshold; empty if never), sps (the last
logged charts/SPS), steps (the last logged step), wall_time_s, run_dir. For a run resumed from a checkpoint, sps and
wall_time_s are those of its last attempt only (the scripts count SPS from where they resumed). The exit status is 1
if a run failed.

Usage:
    python benchmarks/sweep.py --scripts agalite gtrxl lstm --grid env.corridor_length=10,60,120 --seeds 1 2 --total-timesteps 500000 --jobs 2
    python benchmarks/sweep.py --scripts gtrxl --grid memory_len=32,64,128 --env-id MysteryPath-Grid-v0 --seeds 1 2 3 --dry-run
    python benchmarks/sweep.py --launcher slurm --slurm-partition gpu --slurm-gpus 1 --slurm-time-min 720 --jobs 16 ...
    python plots/sweep_plot.py --csv runs/sweep_summary.csv --x-key corridor_length --out plots/results/tmaze_sweep
"""
import csv
import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import List

try:
    import fcntl  # the summary's lock (POSIX; elsewhere side-by-side sweeps of one tag are not guarded)
except ImportError:
    fcntl = None
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
STAT_COLUMNS = ["final_success", "final_return", "solved_at", "sps", "steps", "wall_time_s", "run_dir"]


@dataclass
class Args:
    scripts: List[str] = field(default_factory=lambda: ["agalite", "gtrxl", "lstm"])
    """architectures: runs ppo_<script>.py from --script-dir"""
    env_id: str = "TMaze-v0"
    """the environment id of every run"""
    grid: List[str] = field(default_factory=lambda: ["env.corridor_length=10,60,120"])
    """KEY=V1,V2,...: env.KEY goes into --env-kwargs, any other KEY is a script option (e.g. memory_len=64,128)"""
    seeds: List[int] = field(default_factory=lambda: [1, 2])
    """seeds of every grid point"""
    total_timesteps: int = 500_000
    """--total-timesteps of every run"""
    checkpoint_every: int = 10
    """--checkpoint-every of every run (PPO iterations), so that an interrupted run resumes; 0: off"""
    jobs: int = 2
    """runs at a time (local), or array tasks at a time (slurm)"""
    launcher: str = "local"
    """local (processes on this machine), slurm (a submitit job array), submitit-local (submitit's local executor)"""
    slurm_partition: str = ""
    """SLURM partition (empty: the cluster's default)"""
    slurm_time_min: int = 720
    """time limit of each job in minutes; a run cut off by it resumes from its checkpoint when the sweep is launched again"""
    slurm_cpus: int = 2
    """CPUs per job (its runs get OMP_NUM_THREADS = this)"""
    slurm_gpus: int = 0
    """GPUs per job"""
    slurm_mem_gb: int = 16
    """memory per job in GB"""
    slurm_extra: List[str] = field(default_factory=list)
    """more sbatch options as KEY=VALUE, e.g. account=myproject qos=low"""
    wait: bool = False
    """slurm: wait for the jobs and write the summary (otherwise return after the submission)"""
    tag: str = "sweep"
    """exp_name of a run = <tag>_<script><grid>; a new tag starts a new sweep next to the old one"""
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
    """OMP_NUM_THREADS of each local run when not set already (0: cores // jobs, at least 1)"""
    poll_s: float = 1.0
    """seconds between checks of the running processes"""
    stop_timeout_s: float = 600.0
    """on Ctrl-C or SIGTERM, how long to wait for the runs to checkpoint and exit before killing them"""
    dry_run: bool = False
    """print what would run and what is skipped, run nothing"""


def parse_grid(grid):
    """["env.corridor_length=10,60", "memory_len=64"] -> [(key, [values])], values parsed by parse_value."""
    parsed = []
    for entry in grid:
        key, sep, values = entry.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid entries are KEY=V1,V2,..., got {entry!r}")
        parsed.append((key, [parse_value(v) for v in values.split(",")]))
    return parsed


def parse_value(text):
    """A grid value: a JSON number, true/false or null as such (env.carried=true), anything else as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def column(key):
    return key[len("env."):] if key.startswith("env.") else key


def plan(args, extra_args):
    """One dict per (script, grid point, seed): its exp_name, script arguments, log and marker paths."""
    grid = parse_grid(args.grid)
    points = [[]]
    for key, values in grid:
        points = [point + [(key, value)] for point in points for value in values]
    runs = []
    for script in args.scripts:
        for point in points:
            for seed in args.seeds:
                name = "".join(f"_{'L' if column(k) == 'corridor_length' else column(k)}{v}" for k, v in point)
                exp_name = f"{args.tag}_{script}{name}"
                env_kwargs = {column(k): v for k, v in point if k.startswith("env.")}
                options = [item for k, v in point if not k.startswith("env.") for item in ("--" + k.replace("_", "-"), str(v))]
                script_args = (["--env-id", args.env_id] + (["--env-kwargs", json.dumps(env_kwargs)] if env_kwargs else []) + [
                    "--seed", str(seed),
                    "--total-timesteps", str(args.total_timesteps),
                    "--exp-name", exp_name,
                ] + options + (["--checkpoint-every", str(args.checkpoint_every)] if args.checkpoint_every else [])
                    + SCRIPT_ARGS.get(script, []) + list(extra_args))
                runs.append({
                    "script": script, "point": {column(k): v for k, v in point}, "seed": seed, "exp_name": exp_name,
                    "path": os.path.join(args.script_dir, f"ppo_{script}.py"), "args": script_args,
                    "log": os.path.join(args.log_dir, f"{exp_name}__{seed}.log"),
                    "marker": os.path.join(args.log_dir, f"{exp_name}__{seed}.done"),
                    "pattern": os.path.join(args.workdir, "runs", f"{glob.escape(args.env_id)}__{glob.escape(exp_name)}__{seed}__*"),
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


def run_dirs(run):
    """The run's directories runs/<env_id>__<exp_name>__<seed>__<time>, oldest first."""
    found = [(int(p.rsplit("__", 1)[-1]), p) for p in glob.glob(run["pattern"]) if os.path.isdir(p) and p.rsplit("__", 1)[-1].isdigit()]
    return [p for _, p in sorted(found)]


def resume_dir(run):
    """The newest run directory with a checkpoint (to --resume), or None."""
    with_checkpoint = [p for p in run_dirs(run) if os.path.isfile(os.path.join(p, "checkpoint.pt"))]
    return with_checkpoint[-1] if with_checkpoint else None


def command(run, python_cmd):
    """The run's command line: its arguments, plus --resume <dir> if an earlier attempt left a checkpoint."""
    resume = resume_dir(run)
    return shlex.split(python_cmd) + [run["path"]] + run["args"] + (["--resume", resume] if resume else []), resume


def finish(run, returncode, started, resumed, workdir):
    """After a run's process ended: writes its marker if it succeeded; returns (marker or None, why it failed)."""
    if returncode != 0:
        return None, f"exit status {returncode}"
    new = [p for p in run_dirs(run) if int(p.rsplit("__", 1)[-1]) >= int(started) - 1]
    run_dir = resumed or (new[-1] if new else None)
    if run_dir is None:
        return None, "exited 0 but wrote no run directory under runs/"
    marker = {"args": run["args"], "run_dir": os.path.relpath(run_dir, workdir), "wall_time_s": time.time() - started,
              "returncode": 0, "resumed": bool(resumed), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(run["marker"], "w") as f:
        json.dump(marker, f, indent=1)
    return marker, ""


def job(run, python_cmd, workdir, env):
    """One run as a submitit job (on a cluster node): runs it to the end, or resumes it; writes its marker."""
    cmd, resumed = command(run, python_cmd)
    started = time.time()
    with open(run["log"], "a") as log:
        log.write(f"# {shlex.join(cmd)}\n# cwd {workdir}\n")
        log.flush()
        returncode = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **env)).returncode
    marker, why = finish(run, returncode, started, resumed, workdir)
    if marker is None:
        raise RuntimeError(f"{run['exp_name']} seed {run['seed']} failed ({why}); see {run['log']}")
    return marker


def slurm_parameters(args):
    """submitit.SlurmExecutor parameters (sbatch options) from the --slurm-* options."""
    extra = dict(item.split("=", 1) for item in args.slurm_extra)
    params = dict(time=args.slurm_time_min, cpus_per_task=args.slurm_cpus, mem=f"{args.slurm_mem_gb}G",
                  array_parallelism=args.jobs, job_name=args.tag, additional_parameters=extra)
    if args.slurm_partition:
        params["partition"] = args.slurm_partition
    if args.slurm_gpus:
        params["gpus_per_node"] = args.slurm_gpus
    return params


def submit(args, todo, env):
    """Submits the runs through submitit (SLURM job array, or submitit's local executor); returns the jobs."""
    try:
        import cloudpickle
        import submitit
    except ImportError:
        raise ValueError("--launcher slurm needs submitit: pip install submitit") from None
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # jobs need this file's functions, not its path
    folder = os.path.join(args.log_dir, "submitit", "%j")
    if args.launcher == "slurm":
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**slurm_parameters(args))
        env = dict(env, OMP_NUM_THREADS=str(args.slurm_cpus))
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.slurm_time_min)
    n = len(todo)
    return executor.map_array(job, todo, [" ".join(map(shlex.quote, shlex.split(args.python_cmd)))] * n, [args.workdir] * n, [env] * n)


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # SIGTERM to the sweep (a shutdown, a job's end) stops it as Ctrl-C does


def stop_runs(procs, timeout_s):
    """SIGTERM to each run (it finishes its update, writes a checkpoint and exits 143), then waits for them; a second
    Ctrl-C or SIGTERM, or timeout_s (a run still starting, before its handler exists), kills those left."""
    print(f"stopping: SIGTERM to the {len(procs)} runs in progress; each checkpoints after its update (Ctrl-C again: kill them)", flush=True)
    for proc in procs:
        proc.terminate()
    deadline = time.time() + timeout_s
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.time(), 0))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        print("killing the runs that have not stopped (their last periodic checkpoints stay)", flush=True)
        for proc in procs:
            proc.kill()
            proc.wait()


def run_local(args, todo, env, on_finish=lambda: None):
    """Runs the runs as local processes, --jobs at a time, calling on_finish() after each run that finishes;
    returns (ran, failed) names. Ctrl-C or SIGTERM stops the sweep and its runs (stop_runs). The runs are in their own
    session, so that a terminal's Ctrl-C reaches the sweep only: a run's own KeyboardInterrupt would stop it mid-update,
    without a checkpoint."""
    ran, failed, running = [], [], []
    pending = list(todo)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                run = pending.pop(0)
                cmd, resumed = command(run, args.python_cmd)
                log = open(run["log"], "a")
                log.write(f"# {shlex.join(cmd)}\n# cwd {args.workdir}\n")
                log.flush()
                proc = subprocess.Popen(cmd, cwd=args.workdir, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **env),
                                        start_new_session=True)
                running.append((run, proc, log, time.time(), resumed))
                how = f"resumed from {os.path.relpath(resumed, args.workdir)}" if resumed else "started"
                print(f"{how} {run['exp_name']} seed {run['seed']} (log {run['log']})", flush=True)
            time.sleep(args.poll_s)
            for item in list(running):
                run, proc, log, started, resumed = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                log.close()
                name = f"{run['exp_name']}__{run['seed']}"
                marker, why = finish(run, proc.returncode, started, resumed, args.workdir)
                if marker is None:
                    with open(run["log"]) as f:
                        tail = "".join(f.readlines()[-5:])
                    print(f"FAILED {name} ({why}); last lines of {run['log']}:\n{tail}", flush=True)
                    failed.append(name)
                    continue
                ran.append(name)
                on_finish()
                print(f"finished {name} in {marker['wall_time_s'] / 60:.1f} min -> {marker['run_dir']} ({len(ran) + len(failed)}/{len(todo)})", flush=True)
    except KeyboardInterrupt:
        stop_runs([proc for _, proc, _, _, _ in running], args.stop_timeout_s)
        for _, _, log, _, _ in running:
            log.close()
        raise SystemExit("interrupted: the runs in progress were stopped; run the same command again to resume them from their checkpoints")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return ran, failed


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
    return {"script": run["script"], **run["point"], "seed": run["seed"],
            "final_success": final("charts/success_rate"), "final_return": final("charts/episodic_return"),
            "solved_at": "" if solved_at is None else solved_at,
            "sps": round(float(values("charts/SPS")[-1])) if len(values("charts/SPS")) else "",
            "steps": steps, "wall_time_s": round(marker["wall_time_s"], 1), "run_dir": marker["run_dir"]}


def write_summary(args, runs, quiet=False):
    """Writes the summary CSV: a row per finished run of `runs`, and the rows other invocations wrote. Sweeps of one
    tag may run side by side (e.g. one per script): the file is rewritten under a lock and replaced atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(args.summary_csv)), exist_ok=True)
    with open(args.summary_csv + ".lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _write_summary(args, runs, quiet)


def _write_summary(args, runs, quiet):
    rows = []
    for run in runs:
        marker = read_marker(run, args.workdir)
        if marker is not None:
            rows.append(summary_row(args, run, marker))
    # keep the rows other grids of the same tag wrote (e.g. one invocation per corridor length), unless rewritten
    # here or their run directory is gone; the columns are the union of the grids' keys
    grid_columns = [column(k) for k, _ in parse_grid(args.grid)]
    kept = []
    if os.path.exists(args.summary_csv):
        with open(args.summary_csv, newline="") as f:
            reader = csv.DictReader(f)
            grid_columns = [c for c in reader.fieldnames if c not in ["script", "seed"] + STAT_COLUMNS] + [c for c in grid_columns if c not in reader.fieldnames]
            ours = {row["run_dir"] for row in rows}
            kept = [row for row in reader if row["run_dir"] not in ours and os.path.isdir(os.path.join(args.workdir, row["run_dir"]))]
    with open(args.summary_csv + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["script"] + grid_columns + ["seed"] + STAT_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(kept + rows)
    os.replace(args.summary_csv + ".tmp", args.summary_csv)
    for row in [] if quiet else rows:
        point = " ".join(f"{k}={row[k]}" for k in rows[0] if k not in ["script", "seed"] + STAT_COLUMNS)
        print(f"{row['script']:>8} {point} seed {row['seed']:<3} success {row['final_success']!s:>8} "
              f"return {row['final_return']!s:>9} solved at {row['solved_at'] or 'never':>8} steps {row['steps']:>9} {row['wall_time_s']:>8} s")
    return rows


def main(args, extra_args=()):
    """Runs the sweep; returns {"ran": [...], "skipped": [...], "failed": [...]} (exp_name__seed names)."""
    args.log_dir = args.log_dir or os.path.join(args.workdir, "runs", f"{args.tag}_logs")
    args.summary_csv = args.summary_csv or os.path.join(args.workdir, "runs", f"{args.tag}_summary.csv")
    if args.jobs < 1 or not args.scripts or not args.seeds:
        raise ValueError("need --jobs >= 1 and at least one of each of --scripts and --seeds")
    if args.launcher not in ("local", "slurm", "submitit-local"):
        raise ValueError(f"--launcher is local, slurm or submitit-local, not {args.launcher!r}")
    missing = [s for s in args.scripts if not os.path.isfile(os.path.join(args.script_dir, f"ppo_{s}.py"))]
    if missing:
        present = sorted(n[4:-3] for n in os.listdir(args.script_dir) if n.startswith("ppo_") and n.endswith(".py"))
        raise ValueError(f"no ppo_<script>.py in {args.script_dir} for {missing}; scripts there: {present}")
    env = {"PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(args.threads_per_job or max(1, (os.cpu_count() or 1) // args.jobs))

    runs = plan(args, extra_args)
    markers = {run["marker"]: read_marker(run, args.workdir) for run in runs}  # all checked before anything starts
    todo = [run for run in runs if markers[run["marker"]] is None]
    skipped = [f"{r['exp_name']}__{r['seed']}" for r in runs if markers[r["marker"]] is not None]
    print(f"{len(runs)} runs in the grid: {len(skipped)} finished already, {len(todo)} to run, {args.jobs} at a time ({args.launcher})")
    if args.dry_run:
        for run in todo:
            print(f"would run: (cd {shlex.quote(args.workdir)} && {shlex.join(command(run, args.python_cmd)[0])})")
        return {"ran": [], "skipped": skipped, "failed": []}

    os.makedirs(args.log_dir, exist_ok=True)
    if args.launcher == "local":
        # the summary is brought up to date after every finished run, so a sweep stopped midway keeps its finished rows
        ran, failed = run_local(args, todo, env, on_finish=lambda: write_summary(args, runs, quiet=True))
    else:
        jobs = submit(args, todo, env) if todo else []
        print(f"submitted {len(jobs)} jobs ({', '.join(j.job_id for j in jobs[:3])}{', ...' if len(jobs) > 3 else ''}); logs in {args.log_dir}")
        if args.launcher == "slurm" and not args.wait:
            return {"ran": [], "skipped": skipped, "failed": [], "submitted": [j.job_id for j in jobs]}
        ran, failed = [], []
        for run, submitted in zip(todo, jobs):
            name = f"{run['exp_name']}__{run['seed']}"
            try:
                submitted.result()
                ran.append(name)
            except Exception as e:  # submitit re-raises the job's error (or the scheduler's) here
                print(f"FAILED {name}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}", flush=True)
                failed.append(name)

    rows = write_summary(args, runs)
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
