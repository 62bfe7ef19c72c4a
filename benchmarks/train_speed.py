"""Training speed of the ppo_*.py scripts: environment steps per second of whole training runs, as a user runs
them (a subprocess in a scratch directory, T-Maze defaults unless told), eager and compiled, alone or with
copies running side by side.

For each run it reads the run's own TensorBoard events (charts/SPS, one point per update, each with its wall
time) and reports:
* first_update_s: wall time from the process start to the first logged update: imports, environment set-up
  and, with --compile, the compilation (the first calls of the compiled functions);
* steady_sps: environment steps per second between the second logged update and the last, i.e. with the
  compilation done (needs at least 3 updates);
* script_sps: the script's own charts/SPS of its last update (steps / time since its training loop started);
* wall_s: the whole process.

    python benchmarks/train_speed.py --quick --out /tmp/ts                           # tiny models, seconds
    python benchmarks/train_speed.py --scripts agalite gtrxl lstm --compile both --threads 1
    python benchmarks/train_speed.py --scripts agalite --threads 1 0 --parallel 1 2  # the thread rule
    python benchmarks/train_speed.py --device cuda --num-envs 64 --compile both      # on a GPU

--parallel N starts N copies of the same run at once (seeds 1..N) and reports each: what one run gets while
others share the machine. Timings depend on the machine and its load: report them with both.
"""

import csv
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COLUMNS = ["script", "compile", "threads", "parallel", "copy", "device", "device_used", "num_envs", "total_timesteps", "extra",
           "first_update_s", "steady_sps", "script_sps", "wall_s", "updates"]


@dataclass
class Args:
    scripts: list = field(default_factory=lambda: ["agalite", "gtrxl", "lstm"])
    """which ppo_<name>.py scripts to run"""
    compile: str = "off"
    """off, on or both: runs without and/or with --compile"""
    threads: list = field(default_factory=lambda: [1])
    """values of the scripts' --threads (0: all cores)"""
    parallel: list = field(default_factory=lambda: [1])
    """how many copies of each run at once (side by side on the machine)"""
    total_timesteps: int = 32768
    """steps per run (T-Maze defaults: 2048 per update, so 16 updates)"""
    num_envs: int = 16
    device: str = "cpu"
    """cpu or cuda"""
    env_id: str = "TMaze-v0"
    extra: str = ""
    """more arguments for every script, one string given with '=' (e.g. --extra='--num-steps 64': with a space
    instead, the string's leading '--' reads as an option)"""
    quick: bool = False
    """tiny models and 3 updates: an end-to-end check in seconds"""
    out: str = os.path.join("benchmarks", "results", "train_speed")
    """output prefix: writes {out}.csv and {out}.md"""
    timeout: float = 3600
    """seconds after which a run is killed"""


QUICK_ARGS = dict(lstm="--d-model 16 --lstm-hidden 16", gtrxl="--n-layers 1 --d-model 16 --n-heads 2 --d-head 8 --d-ffc 16 --memory-len 4",
                  agalite="--n-layers 1 --d-model 16 --n-heads 2 --d-head 8 --d-ffc 16 --eta 2 --r 2",
                  galite="--n-layers 1 --d-model 16 --n-heads 2 --d-head 8 --d-ffc 16 --eta 2")


def command(script, compiled, threads, seed, args):
    cmd = [sys.executable, os.path.join(ROOT, f"ppo_{script}.py"), "--env-id", args.env_id, "--seed", str(seed),
           "--total-timesteps", str(args.total_timesteps), "--num-envs", str(args.num_envs)]
    cmd += ["--compile" if compiled else "--no-compile", "--cuda" if args.device == "cuda" else "--no-cuda"]
    cmd += ["--threads", str(threads)]
    if args.quick:
        cmd += QUICK_ARGS[script].split() + ["--num-steps", "16", "--num-minibatches", "2"]
    return cmd + args.extra.split()


def read_run(run_dir):
    """(wall times, steps, values) of charts/SPS in a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    points = events.Scalars("charts/SPS")
    return [p.wall_time for p in points], [p.step for p in points], [p.value for p in points]


def measure(script, compiled, threads, parallel, args):
    """Runs `parallel` copies at once; one result row per copy."""
    procs = []
    for copy in range(parallel):
        workdir = tempfile.mkdtemp(prefix=f"train_speed_{script}_")
        log = open(os.path.join(workdir, "log.txt"), "w")
        start = time.time()
        proc = subprocess.Popen(command(script, compiled, threads, copy + 1, args), cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        procs.append((copy, workdir, log, start, proc))
    rows = []
    for copy, workdir, log, start, proc in procs:
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.time() - start
        log.close()
        if proc.returncode != 0:
            tail = open(os.path.join(workdir, "log.txt")).read()[-2000:]
            raise SystemExit(f"error: ppo_{script}.py failed (exit {proc.returncode}) in {workdir}:\n{tail}")
        with open(os.path.join(workdir, "log.txt")) as f:  # the script's line "<run>: <n> x <env id> on <device>"
            found = re.search(r": \d+ x \S+ on (\w+)", f.read())
        device_used = found.group(1) if found else "?"
        (run_dir,) = glob.glob(os.path.join(workdir, "runs", "*"))
        walls, steps, sps = read_run(run_dir)
        steady = (steps[-1] - steps[1]) / (walls[-1] - walls[1]) if len(steps) >= 3 else float("nan")
        rows.append(dict(script=script, compile=compiled, threads=threads, parallel=parallel, copy=copy, device=args.device, device_used=device_used,
                         num_envs=args.num_envs, total_timesteps=args.total_timesteps, extra=args.extra,
                         first_update_s=round(walls[0] - start, 1), steady_sps=round(steady, 1), script_sps=sps[-1],
                         wall_s=round(wall, 1), updates=len(steps)))
        print(", ".join(f"{k}={v}" for k, v in rows[-1].items() if k not in ("device", "extra", "total_timesteps")), flush=True)
    return rows


def main(args: Args):
    if args.compile not in ("off", "on", "both"):
        raise SystemExit(f"error: --compile must be off, on or both, got {args.compile!r}")
    if args.quick:
        args.total_timesteps = min(args.total_timesteps, 3 * args.num_envs * 16)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows = []
    for script in args.scripts:
        if not os.path.exists(os.path.join(ROOT, f"ppo_{script}.py")):
            raise SystemExit(f"error: no script ppo_{script}.py")
        for compiled in modes:
            for threads in args.threads:
                for parallel in args.parallel:
                    rows += measure(script, compiled, threads, parallel, args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| script | compile | threads | runs side by side | steady SPS (each run) | first update (s) | wall (s) |",
             "|---|---|---|---|---|---|---|"]
    groups = {}
    for row in rows:
        groups.setdefault((row["script"], row["compile"], row["threads"], row["parallel"]), []).append(row)
    for (script, compiled, threads, parallel), group in groups.items():
        sps = ", ".join(f"{r['steady_sps']:.0f}" for r in group)
        first = ", ".join(f"{r['first_update_s']:.0f}" for r in group)
        wall = ", ".join(f"{r['wall_s']:.0f}" for r in group)
        lines.append(f"| ppo_{script}.py | {'on' if compiled else 'off'} | {threads or 'all'} | {parallel} | {sps} | {first} | {wall} |")
    note = f"\n{args.env_id}, {args.num_envs} envs, {args.total_timesteps} steps per run, device {args.device}; extra: '{args.extra}'\n"
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n" + note)
    print("\n".join(lines) + note)
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
