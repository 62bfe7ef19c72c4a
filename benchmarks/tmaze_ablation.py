"""What makes a long T-Maze corridor reachable? The release's protocol with one setting changed at a time.

TMaze-v0 at corridor 120: until an agent has reached the junction once, every episode costs -0.1 a step and ends at
the 1000-step time limit, so the first question is whether (and when) a run finds the junction at all; learning
the cue comes after. Each variant below is the release's protocol (docs/tmaze_protocol.md, "The release's protocol": A2C,
release heads, time-outs terminal) with one of its settings set to our default:

| variant | tag | on top of the protocol's flags |
|---|---|---|
| release (the protocol itself) | abl_release | (nothing) |
| time-limit bootstrap | abl_bootstrap | --bootstrap-timeouts |
| linear heads | abl_heads | --head-hidden 0 --actor-gain 0.01 --critic-gain 1 |
| PPO update | abl_ppo | --update-epochs 4 --num-minibatches 4 --norm-adv |
| frozen critic (a probe, not a protocol setting) | abl_vf0 | --vf-coef 0 |

The last variant asks whether the critic's learning (e.g. a value that rises along the corridor when time-outs are
terminal, tmaze_exploration.py --value-positions) is what leads a run to the junction: with --vf-coef 0 the critic
keeps its initial weights and the advantages carry no learned signal about where to walk.

The runs are made by benchmarks/sweep.py, one invocation per variant and `--budget` steps per run
(`--print-commands` prints them). This reads every run's TensorBoard log up to `--budget` steps (so longer runs
are compared over the same steps) and prints one row per run:
- first junction: the first logged update with an episode shorter than the time limit (an episode ends early only
  at the junction), i.e. the step by which the run had reached the junction at least once (to within one update);
- junction share: the share of logged updates, over the whole budget, with an episode that ended at the junction;
- success and return: means over the last `--final-frac` of the logged points up to the budget;
- solved at: the first step at which the mean success of 5 consecutive logged points reaches 0.9 (as sweep.py);
- entropy: the policy entropy (losses/entropy) at the first logged update and at the budget.

Usage:
    python benchmarks/tmaze_ablation.py --print-commands          # the sweep commands that make the runs
    python benchmarks/tmaze_ablation.py --optimizer-checks        # the sweeps that check what the release's optimizer did
    python benchmarks/tmaze_ablation.py --budget 1000000            # the table (markdown) from runs/
    python benchmarks/tmaze_ablation.py --tags protocol --scripts agalite gtrxl lstm --budget 5000000  # other sweeps
    python benchmarks/tmaze_ablation.py --tags protocolgb --grid gate_bias=-3 --budget 5000000   # runs with grid options
"""
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import List

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plots"))
import tb_runs  # noqa: E402  (plots/tb_runs.py: reads the event files)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import sweep  # noqa: E402  (benchmarks/sweep.py: how the runs are named)

# The authors' release's T-Maze protocol (docs/tmaze_protocol.md), without --env-id, --total-timesteps and --checkpoint-every (sweep.py
# sets those): A2C as PPO with one epoch over one minibatch, the release's heads, time-outs terminal, optax's Adam
# (eps 1e-8) and the release's value loss value_coef * mean((G - V)^2) with value_coef 0.5, which is our
# --vf-coef 1.0 (our value loss is 0.5 * mean((G - V)^2)). This is the one place that defines it.
_A2C_TMAZE = ("--num-envs 8 --num-steps 256 --no-anneal-lr --max-grad-norm 0.5 --gamma 0.99 --gae-lambda 0.95 "
              "--update-epochs 1 --num-minibatches 1 --no-norm-adv --no-bootstrap-timeouts --head-hidden 128 "
              "--actor-gain 1.414 --critic-gain 1.414")  # what the release's protocol and the earlier one share
PROTOCOL_COMMON = f"{_A2C_TMAZE} --adam-eps 1e-8 --vf-coef 1.0"
# each model's own learning rate and entropy coefficient, as in the release's config/tmaze/*.yaml (GTrXL-256 there:
# lr 5e-4, entropy 0.001, i.e. --memory-len 256 --ent-coef 0.001)
PROTOCOL_MODEL = {
    "agalite": "--learning-rate 1e-4 --ent-coef 0.001",
    "galite": "--learning-rate 1e-4 --ent-coef 0.001",
    "gtrxl": "--learning-rate 5e-4 --ent-coef 0.01 --memory-len 128",
    "lstm": "--learning-rate 1e-4 --ent-coef 0.001",
}
# flags that change a run's speed, not what it computes (the corridor sweeps use them; tests/test_gtrxl.py: --kv-cache)
SPEED_FLAGS = {"agalite": "--compile", "galite": "", "gtrxl": "--compile --kv-cache", "lstm": "--compile"}
# the protocol of the earlier corridor figure and of the ablation tables in docs/ (before 2026-12): CleanRL's Adam eps
# 1e-5, half the release's value-loss weight, and AGaLiTe's lr and entropy for every model
EARLIER_PROTOCOL = f"{_A2C_TMAZE} --adam-eps 1e-5 --vf-coef 0.5 --learning-rate 1e-4 --ent-coef 0.001"
# the corridor figure's sweep (plots/results/tmaze_protocol.*): tag, corridors, seeds, budget, early stop
CORRIDOR_SWEEP = dict(tag="release", corridors=(60, 120, 200), seeds=(1, 2, 3), budget=5_000_000, stop_at_success=0.95)


# The checks of what the release's optimizer settings did (docs/tmaze_protocol.md, "What did it"): the protocol with
# one of its two settings set back to the earlier protocol's, AGaLiTe at corridor 120, seeds 1 and 2, up to 5M steps
# (the figure's budget: with both settings its corridor-120 cells solved only at 3.05-4.79M, so a 3M budget could not
# tell "this setting alone is enough" from "not"; both together are the corridor figure's cells; the earlier
# protocol's runs are the fourth column), and
# the gate-bias finding of the earlier protocol under the release's (--gate-bias -3, corridor 120, seeds 1-2, 5M)
ATTRIBUTION = {
    "Adam eps 1e-8 alone": ("attr_eps", "--vf-coef 0.5"),
    "--vf-coef 1.0 alone": ("attr_vf", "--adam-eps 1e-5"),
    # the earlier protocol's runs again, with the attribution's code (those in tmaze_earlier.csv predate it, logs lost)
    "neither": ("attr_none", "--adam-eps 1e-5 --vf-coef 0.5"),
}
ATTRIBUTION_SWEEP = dict(script="agalite", corridor=120, seeds=(1, 2), budget=5_000_000)
GATE_BIAS_SWEEP = dict(tag="releasegb", script="agalite", corridor=120, seeds=(1, 2), budget=5_000_000, gate_bias=-3)
# the passive T-Maze (docs/tmaze_passive.md) with the scripts' own PPO and initialisation, only Adam's eps the release's
# (the passive study ran with 1e-5, the scripts' default then; 1e-8 is the default now, named here all the same)
PASSIVE_EPS_SWEEP = dict(tag="passive_eps8", script="agalite", corridors=(100, 400), seeds=(1, 2), budget=3_000_000)


def protocol(script):
    """The release's T-Maze flags for ppo_<script>.py."""
    return f"{PROTOCOL_COMMON} {PROTOCOL_MODEL[script]}"


def corridor_sweep_command(script):
    """The sweep that makes one script's runs of the corridor figure (resumable: the same command continues them)."""
    s = CORRIDOR_SWEEP
    return (f"python benchmarks/sweep.py --tag {s['tag']} --env-id TMaze-v0 --scripts {script} "
            f"--grid env.corridor_length={','.join(map(str, s['corridors']))} --seeds {' '.join(map(str, s['seeds']))} "
            f"--total-timesteps {s['budget']} --checkpoint-every 50 --jobs 1 -- {protocol(script)} "
            f"--stop-at-success {s['stop_at_success']} {SPEED_FLAGS[script]}".rstrip())


def optimizer_check_commands():
    """The sweeps of the optimizer checks above (attribution, gate bias, passive T-Maze), in that order."""
    a, g, p = ATTRIBUTION_SWEEP, GATE_BIAS_SWEEP, PASSIVE_EPS_SWEEP
    seeds = lambda s: " ".join(map(str, s["seeds"]))
    commands = [
        (f"python benchmarks/sweep.py --tag {tag} --env-id TMaze-v0 --scripts {a['script']} "
         f"--grid env.corridor_length={a['corridor']} --seeds {seeds(a)} --total-timesteps {a['budget']} --checkpoint-every 50 "
         f"--jobs 1 -- {protocol(a['script'])} {flags} --stop-at-success {CORRIDOR_SWEEP['stop_at_success']} {SPEED_FLAGS[a['script']]}").rstrip()
        for tag, flags in ATTRIBUTION.values()]
    commands.append(
        f"python benchmarks/sweep.py --tag {g['tag']} --env-id TMaze-v0 --scripts {g['script']} "
        f"--grid env.corridor_length={g['corridor']} gate_bias={g['gate_bias']} --seeds {seeds(g)} --total-timesteps {g['budget']} "
        f"--checkpoint-every 50 --jobs 1 -- {protocol(g['script'])} --stop-at-success {CORRIDOR_SWEEP['stop_at_success']} "
        f"{SPEED_FLAGS[g['script']]}".rstrip())
    commands += [
        f"python benchmarks/sweep.py --tag {p['tag']} --env-id TMazePassive-v0 --scripts {p['script']} "
        f"--grid env.corridor_length={L} env.carried=true --seeds {seeds(p)} --total-timesteps {p['budget']} "
        f"--solved-threshold 0.95 --checkpoint-every 50 --jobs 1 -- --num-steps {L + 1} --stop-at-success 0.95 --adam-eps 1e-8"
        for L in p["corridors"]]
    return commands


# variant: (sweep tag, flags after the protocol's; later flags win)
VARIANTS = {
    "release": ("abl_release", ""),
    "time-limit bootstrap": ("abl_bootstrap", "--bootstrap-timeouts"),
    "linear heads": ("abl_heads", "--head-hidden 0 --actor-gain 0.01 --critic-gain 1"),
    "PPO update": ("abl_ppo", "--update-epochs 4 --num-minibatches 4 --norm-adv"),
    "frozen critic": ("abl_vf0", "--vf-coef 0"),
}


@dataclass
class Args:
    scripts: List[str] = field(default_factory=lambda: ["agalite"])
    """architectures (ppo_<script>.py)"""
    corridor_length: int = 120
    """TMaze-v0 corridor length of the runs"""
    seeds: List[int] = field(default_factory=lambda: [1, 2])
    budget: int = 1_000_000
    """compare every run over its first this many environment steps"""
    runs_dir: str = os.path.join(ROOT, "runs")
    """where the runs are (the scripts' runs/ folder; the sweeps' working directory is the folder above it)"""
    time_limit: int = 1000
    """TMaze-v0's max_episode_steps (an episode that ends earlier ended at the junction)"""
    final_frac: float = 0.1
    print_commands: bool = False
    """print the sweep commands that make the variants' runs and exit"""
    earlier_protocol: bool = False
    """with --print-commands: the commands of the earlier protocol (Adam eps 1e-5, --vf-coef 0.5, one lr and entropy
    for all), which made the ablation tables in docs/tmaze_protocol.md"""
    corridor_sweeps: bool = False
    """print the sweep commands of the corridor figure (the release's protocol, one per script) and exit"""
    optimizer_checks: bool = False
    """print the sweep commands of the optimizer checks (eps alone, --vf-coef alone, neither, --gate-bias -3 under the
    release's protocol, the passive T-Maze with Adam eps 1e-8) and exit"""
    results_table: str = ""
    """print the markdown table of docs/tmaze_protocol.md's results from this summary CSV of sweep.py (e.g.
    plots/results/tmaze_protocol.csv; with a variant column, plots/results/tmaze_attribution.csv) and exit"""
    tags: List[str] = field(default_factory=list)
    """read the runs of these sweep tags instead of the variants' (e.g. protocol: the 5M-step corridor runs)"""
    grid: List[str] = field(default_factory=list)
    """further grid entries of the runs (those read, and those --print-commands makes), as sweep.py's --grid (e.g. gate_bias=-3)"""


def sweep_command(args, variant, script):
    """The sweep that makes one variant's runs of one script (the protocol's flags differ per script)."""
    tag, flags = VARIANTS[variant]
    base = EARLIER_PROTOCOL if args.earlier_protocol else protocol(script)
    return (f"python benchmarks/sweep.py --tag {tag} --env-id TMaze-v0 --scripts {script} "
            f"--grid {' '.join([f'env.corridor_length={args.corridor_length}'] + args.grid)} --seeds {' '.join(map(str, args.seeds))} "
            f"--total-timesteps {args.budget} --jobs 1 -- {base} {flags}".rstrip())


def run_dir(args, tag, script, seed):
    """The newest run directory of (tag, script, seed) at this corridor length, or None (named as sweep.py names it)."""
    grid = sweep.Args(tag=tag, scripts=[script], grid=[f"env.corridor_length={args.corridor_length}"] + args.grid, seeds=[seed],
                      env_id="TMaze-v0", workdir=os.path.dirname(os.path.abspath(args.runs_dir)))
    found = sweep.run_dirs(sweep.plan(grid, [])[0])
    return found[-1] if found else None


def summarize(scalars, budget, time_limit, final_frac=0.1):
    """One run's row from its scalars {tag: (steps, values)}, every point after `budget` steps dropped."""
    def upto(tag):
        steps, values = scalars.get(tag, (np.zeros(0), np.zeros(0)))
        keep = steps <= budget
        return steps[keep], values[keep]

    steps, lengths = upto("charts/episodic_length")
    reached = lengths < time_limit
    success_steps, success = upto("charts/success_rate")
    _, returns = upto("charts/episodic_return")
    _, entropy = upto("losses/entropy")
    solved = tb_runs.first_solved_step(success_steps, success, 0.9, 5) if len(success) else None
    return {
        "steps": int(max((s[-1] for s in (upto(t)[0] for t in scalars) if len(s)), default=0)),
        "first_junction": int(steps[np.argmax(reached)]) if reached.any() else None,
        "junction_share": float(reached.mean()) if len(reached) else math.nan,
        "success": tb_runs.final_value(success, final_frac) if len(success) else math.nan,
        "return": tb_runs.final_value(returns, final_frac) if len(returns) else math.nan,
        "solved_at": solved,
        "entropy_start": float(entropy[0]) if len(entropy) else math.nan,
        "entropy_end": float(entropy[-1]) if len(entropy) else math.nan,
    }


MODEL_NAMES = {"agalite": "AGaLiTe", "galite": "GaLiTe", "gtrxl": "GTrXL-128", "lstm": "LSTM"}


def results_table(csv_path):
    """The summary CSV's rows (one per run) as a markdown table, ordered by model, corridor and seed (after the
    variant, in the order of first appearance, where the CSV has a `variant` column, as the attribution's does):
    where each run stopped (solved: the sweep's solved_at, the step its 5-update mean success reached the threshold),
    its final success and return (means over the last 10% of its logged updates)."""
    import csv

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    order, variants = list(MODEL_NAMES), list(dict.fromkeys(r.get("variant", "") for r in rows))
    rows.sort(key=lambda r: (variants.index(r.get("variant", "")), order.index(r["script"]) if r["script"] in order
                             else len(order), r["script"], int(r["corridor_length"]), int(r["seed"])))
    first = ("| variant ", "|---") if variants != [""] else ("", "")
    lines = [f"{first[0]}| model | corridor | seed | stopped at | final success | final return |",
             f"{first[1]}|---|---:|---:|---|---:|---:|"]
    for r in rows:
        steps = int(r["steps"])
        stopped = f"{steps / 1e6:.2f}M" if steps < 4_990_000 else f"{round(steps / 1e6)}M"
        state = f"solved at {int(r['solved_at']) / 1e6:.2f}M" if r["solved_at"] else "not solved"
        variant = f"| {r['variant']} " if first[0] else ""
        lines.append(f"{variant}| {MODEL_NAMES.get(r['script'], r['script'])} | {r['corridor_length']} | {r['seed']} | "
                     f"{stopped}, {state} | {float(r['final_success']):.2f} | {float(r['final_return']):.1f} |")
    return lines


def table(args):
    lines = [f"| variant | script | seed | steps read | first junction | junction share | success | return | solved at | entropy start -> end |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    missing = []
    variants = {tag: (tag, "") for tag in args.tags} if args.tags else VARIANTS
    for variant, (tag, _) in variants.items():
        for script in args.scripts:
            for seed in args.seeds:
                path = run_dir(args, tag, script, seed)
                if path is None:
                    missing.append(f"{variant} {script} seed {seed}")
                    continue
                row = summarize(tb_runs.load_run(path)["scalars"], args.budget, args.time_limit, args.final_frac)
                lines.append(
                    f"| {variant} | {script} | {seed} | {row['steps']:,} | "
                    f"{'never' if row['first_junction'] is None else format(row['first_junction'], ',')} | "
                    f"{row['junction_share']:.2f} | {row['success']:.2f} | {row['return']:.1f} | "
                    f"{'never' if row['solved_at'] is None else format(row['solved_at'], ',')} | "
                    f"{row['entropy_start']:.2f} -> {row['entropy_end']:.2f} |")
    return lines, missing


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.corridor_sweeps:
        for script in args.scripts:
            print(corridor_sweep_command(script))
        sys.exit(0)
    if args.results_table:
        if not os.path.isfile(args.results_table):
            sys.exit(f"--results-table: no such file: {args.results_table}")
        print("\n".join(results_table(args.results_table)))
        sys.exit(0)
    if args.optimizer_checks:
        print("\n".join(optimizer_check_commands()))
        sys.exit(0)
    if args.print_commands:
        for variant in VARIANTS:
            for script in args.scripts:
                print(f"# {variant}, {script}\n{sweep_command(args, variant, script)}")
        sys.exit(0)
    lines, missing = table(args)
    print(f"TMaze-v0 corridor {args.corridor_length}, first {args.budget:,} steps of each run ({shlex.join(sys.argv)})")
    print("\n".join(lines))
    for name in missing:
        print(f"no run yet: {name}")
