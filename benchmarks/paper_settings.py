"""The authors' release's settings for Mystery Path and Craftax, per script, defined once, and the sweeps that run them.

The release ran PPO on both families with settings of its own (docs/hard_tasks.md lists them with their sources):
Mystery Path from its config/mysterypath/*.yaml and src/agents/ppo.py, Craftax from its config_pure/craftax/*.yaml and
src_pure/purejaxrl/ppo_rnn.py. Here they are our scripts' flags, in three parts per family:
- RELEASE_COMMON: the PPO flags all scripts share (batch, epochs, minibatches, optimiser, losses, heads);
- RELEASE_MODEL: each model's sizes (flags equal to our defaults are written out anyway, so that the release's
  value shows here and a changed default cannot change these runs);
- HERE: what this hardware (2 CPU cores, no GPU) changes, and why; the variant the printed sweeps run by default.
The runs are made by benchmarks/sweep.py, one invocation per script and `BUDGET` steps per run (the release trained
150M steps on Mystery Path and 1e9 on Craftax; the budgets here come from the measured speeds, docs/hard_tasks.md).

Usage:
    python benchmarks/paper_settings.py --print-commands --family mysterypath             # this hardware's sweeps
    python benchmarks/paper_settings.py --print-commands --family craftax --scripts agalite gtrxl lstm
    python benchmarks/paper_settings.py --print-commands --family craftax --release          # the release's own batch
    python benchmarks/paper_settings.py --family craftax --scripts agalite                    # one script's flags
"""
from dataclasses import dataclass, field
from typing import List

import tyro

FAMILIES = ("mysterypath", "craftax")
SCRIPTS = ("agalite", "gtrxl", "lstm")  # the models the release compared on these families
# the release's environment of each family (also MysteryPath-Easy-v0, the continuous-move version; Craftax-Classic-
# Symbolic-v1 is the smaller game and takes the same flags)
ENV_ID = {"mysterypath": "MysteryPath-Grid-Easy-v0", "craftax": "Craftax-Symbolic-v1"}

# The PPO flags all scripts share, without --env-id, --total-timesteps and --checkpoint-every (sweep.py sets those).
RELEASE_COMMON = {
    # 128 envs x 128 steps, 3 epochs of 8 minibatches, advantages normalised per minibatch, the value loss unclipped,
    # 0.5 * mean((G - V)^2) weighted 0.5 (ours: 0.5 * mean((G - V)^2) times --vf-coef), a constant learning rate,
    # optax's Adam (eps 1e-8), gradients clipped to norm 5; every 128-step rollout trained as one sequence from its
    # stored start state (--seq-len 0); time-outs terminal; heads Dense(256) -> tanh -> Dense, gains sqrt(2) for the
    # hidden layer (--head-hidden-gain's default) and both outputs.
    "mysterypath": (
        "--num-envs 128 --num-steps 128 --seq-len 0 --update-epochs 3 --num-minibatches 8 --clip-coef 0.2 --norm-adv "
        "--no-clip-vloss --vf-coef 0.5 --ent-coef 3e-4 --learning-rate 2.5e-4 --no-anneal-lr --max-grad-norm 5.0 "
        "--adam-eps 1e-8 --gamma 0.99 --gae-lambda 0.95 --no-bootstrap-timeouts --head-hidden 256 --head-activation tanh "
        "--actor-gain 1.414 --critic-gain 1.414"),
    # purejaxrl's recurrent PPO: 1024 envs x 128 steps, 4 epochs of 8 minibatches, lr 4e-4 annealed linearly to 0, Adam
    # eps 1e-5, gradients clipped to norm 1, GAE lambda 0.8, the clipped value loss 0.5 * mean(max(...)) weighted 0.5
    # (ours exactly), normalised advantages; its GAE cuts the trace at every episode end, time-outs included; heads
    # Dense(128) -> relu -> Dense, hidden gain 2, actor output 0.01, critic output 1. Its optimistic resets are
    # envs/craftax.py's.
    "craftax": (
        "--num-envs 1024 --num-steps 128 --seq-len 0 --update-epochs 4 --num-minibatches 8 --clip-coef 0.2 --norm-adv "
        "--clip-vloss --vf-coef 0.5 --ent-coef 0.01 --learning-rate 4e-4 --anneal-lr --max-grad-norm 1.0 "
        "--adam-eps 1e-5 --gamma 0.99 --gae-lambda 0.8 --no-bootstrap-timeouts --head-hidden 128 --head-activation relu "
        "--head-hidden-gain 2 --actor-gain 0.01 --critic-gain 1"),
}
# Each model's sizes in the release. The observation reaches the memory through our Linear(d_model) + ReLU embedding:
# on Craftax that is the release's Dense(128) + relu; on Mystery Path our image encoder (envs/encoders.py) adds a
# 256-unit relu layer after the release's Nature CNN (docs/hard_tasks.md, "What ours differs in"). The release gives
# no LSTM sizes for these families: the LSTM keeps our defaults (one layer of 600, its T-Maze LSTM).
RELEASE_MODEL = {
    "mysterypath": {
        "agalite": "--n-layers 4 --d-model 128 --d-head 64 --d-ffc 128 --n-heads 4 --eta 4 --r 2",  # (eta 8 also run)
        "gtrxl": "--n-layers 4 --d-model 128 --d-head 64 --n-heads 4 --memory-len 128 --gru-bias 2",  # (memory 32, 64 too)
        "lstm": "--lstm-hidden 600",
    },
    "craftax": {
        "agalite": "--n-layers 4 --d-model 128 --d-head 64 --d-ffc 128 --n-heads 4 --eta 8 --r 2",
        "gtrxl": "--n-layers 4 --d-model 128 --d-head 64 --n-heads 4 --memory-len 128",
        "lstm": "--lstm-hidden 600",
    },
}
# What 2 CPU cores change (option value pairs, replacing the release's). Fewer envs, the same 128 steps per env, epochs and
# minibatches, for two reasons: (1) the budgets here are under 1% (Craftax) and 3% (Mystery Path) of the release's
# steps, and with its batch they would be few updates (Craftax: 1024 x 128 = 131k steps per update, 61 updates in 8M
# steps; Mystery Path: 16k steps, 305 updates in 5M); with 64 and 32 envs a run makes 16x and 4x as many updates of the
# same 8 minibatches (Craftax 8 sequences of 128 steps each, Mystery Path 4); (2) memory: the release's Craftax rollout alone would hold 1024 x 128 x 8268
# float32 observations (4.3 GB) and a minibatch of 16k steps through 4 layers; 64 envs hold 270 MB.
HERE = {"mysterypath": "--num-envs 32", "craftax": "--num-envs 64"}
# Default steps per run: what one run finishes in about 2.5 hours on one core of this 2-core machine, at the eager
# SPS measured inside runs beside another one (docs/hard_tasks.md): the machines this project's runs are made on are
# lent for a few hours at a time and may not keep a run directory, so a run should end on the machine it started on
# (a figure's runs are made two at a time and added to its CSV). Craftax-Symbolic-v1 3M steps (AGaLiTe ~420 SPS and the
# LSTM ~450: 1.8-2.0 h; GTrXL-128 ~230-270: 3.1-3.6 h, or 517 SPS alone with --threads 2: 1.6 h),
# Mystery Path 1.5M (GTrXL-128 ~204 SPS: 2.0 h). On a machine that keeps its runs use --budget (the earlier plan: 8M
# and 5M, about 30 CPU-hours per figure).
# Checkpoints every K iterations, about every 3 minutes (Mystery Path 4,096 steps per iteration, Craftax 8,192; a
# checkpoint is about 35 MB and takes well under a second): a session's end kills its runs without a SIGTERM, so
# what a run loses there is the time since its last checkpoint.
BUDGET = {"mysterypath": 1_500_000, "craftax": 3_000_000}
CHECKPOINT_EVERY = {"mysterypath": 10, "craftax": 5}
# flags that change a run's speed, not what it computes (may change on resumption); the speeds were measured eager
SPEED_FLAGS = {"agalite": "", "gtrxl": "", "lstm": ""}


def override(flags, changes):
    """`flags` with each option of `changes` ("--num-envs 64") given its new value in place (or appended if absent)."""
    tokens, changes = flags.split(), changes.split()
    for i in range(0, len(changes), 2):
        option, value = changes[i], changes[i + 1]
        if option in tokens:
            tokens[tokens.index(option) + 1] = value
        else:
            tokens += [option, value]
    return " ".join(tokens)


def flags(family, script, release=False):
    """The flags of ppo_<script>.py for a family: the release's, with (unless `release`) this hardware's changes."""
    release_flags = f"{RELEASE_COMMON[family]} {RELEASE_MODEL[family][script]}".strip()
    return release_flags if release else override(release_flags, HERE[family])


def sweep_command(family, script, release=False, budget=None, seeds=(1, 2), env_id=None, jobs=1):
    """The sweep that makes one script's runs of a family (resumable: the same command continues them)."""
    tag = f"{family}_{'release' if release else 'here'}"
    extra = f"{flags(family, script, release)} {SPEED_FLAGS[script]}".rstrip()
    return (f"python benchmarks/sweep.py --tag {tag} --env-id {env_id or ENV_ID[family]} --scripts {script} --grid "
            f"--seeds {' '.join(map(str, seeds))} --total-timesteps {budget or BUDGET[family]} "
            f"--checkpoint-every {CHECKPOINT_EVERY[family]} --jobs {jobs} -- {extra}")


def cpu_hours(sps, steps, runs=1):
    """CPU-hours of `runs` runs of `steps` steps at `sps` steps per second, each run on one core."""
    return runs * steps / sps / 3600


@dataclass
class Args:
    family: str = "mysterypath"
    """mysterypath or craftax"""
    scripts: List[str] = field(default_factory=lambda: list(SCRIPTS))
    """architectures (ppo_<script>.py)"""
    print_commands: bool = False
    """print the sweep commands that make the family's runs, one per script, and exit"""
    release: bool = False
    """the release's own settings (its number of envs) instead of this hardware's"""
    budget: int = 0
    """steps per run (0: the family's BUDGET)"""
    seeds: List[int] = field(default_factory=lambda: [1, 2])
    env_id: str = ""
    """the environment (empty: the family's, MysteryPath-Grid-Easy-v0 or Craftax-Symbolic-v1)"""


def main(args):
    if args.family not in FAMILIES:
        raise SystemExit(f"error: --family must be one of {', '.join(FAMILIES)}, got {args.family!r}")
    unknown = [s for s in args.scripts if s not in SCRIPTS]
    if unknown:
        raise SystemExit(f"error: --scripts: no release settings for {unknown}; choose from {', '.join(SCRIPTS)}")
    for script in args.scripts:
        if args.print_commands:
            print(sweep_command(args.family, script, args.release, args.budget or None, args.seeds, args.env_id or None))
        else:
            print(f"{script}: {flags(args.family, script, args.release)}")


if __name__ == "__main__":
    main(tyro.cli(Args))
