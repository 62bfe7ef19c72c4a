"""Can a memory learn the passive T-Maze's bit when it is told the answer? Supervised training, no RL.

On TMazePassive-v0 (carried) PPO learns the cue from one decision per episode, through a policy gradient whose
sign is the episode's success: 16 noisy decisions per update at the sweep's settings. This takes RL out: each
step trains the script's own network (memory and actor head, a fresh initialisation, the script's options) on
a batch of fresh carried episodes, with the logistic loss of d = logit(UP) - logit(DOWN) at the junction against
the cue, by Adam with the script's learning rate and gradient clipping (and eps 1e-5, the scripts' default when the
results in docs/tmaze_passive.md were made; the scripts' is 1e-8 now). Whole episodes are one sequence
(T = L + 1), as in the sweep. It reports the first step at which the accuracy of the last 10 batches reaches
0.95 (never: not within --steps), and the loss and accuracy at the end.

So it separates two reasons a memory can fail in the sweep: if it learns the bit here in a few hundred steps,
the memory and its initialisation can carry the bit over L steps, and what the RL run lacks is signal;
if it does not learn here either, the memory (or its initialisation) is what stops it.

    python benchmarks/passive_supervised.py --scripts agalite gtrxl lstm --lengths 50 200
    python benchmarks/passive_supervised.py --scripts agalite --lengths 200 800 --set gate_bias=-5.5
"""

import importlib
import os
import sys
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from memory_reach import decision, episodes, model_args  # noqa: E402  (also registers TMazePassive-v0)


@dataclass
class Args:
    scripts: list = field(default_factory=lambda: ["agalite", "gtrxl", "lstm"])
    """which ppo_<name>.py models, at their default sizes"""
    lengths: list = field(default_factory=lambda: [50, 200])
    """corridor lengths L (the cue is held for L steps)"""
    set: list = field(default_factory=list)
    """model options KEY=VALUE (e.g. gate_bias=-5.5, learning_rate=1e-3), as the script's --key value"""
    seed: int = 0
    """the initialisation's seed (torch.manual_seed) and the episodes' seeds"""
    batch: int = 16
    """episodes per step (the sweep's rollout holds 16: one per environment)"""
    steps: int = 300
    """gradient steps at most"""
    stop_at: float = 0.95
    """stop once the accuracy of the last 10 batches reaches this (0: run all --steps)"""
    threads: int = 1
    """torch.set_num_threads"""


def batch_of_episodes(L, n, seed):
    """(x, cue_up): n carried episodes (L + 1, n, obs_dim) float32, each with a random cue, and which are "up"."""
    up, down = episodes(L, n, seed)  # the same episodes with the cue up and with it down
    cue_up = torch.from_numpy(np.random.default_rng(seed).random(n) < 0.5)
    x = torch.where(cue_up[None, :, None], up, down)
    return x.float(), cue_up.float()


def train(agent, run_args, L, args, label="", log=print):
    """Supervised steps on fresh batches; returns (solved_at or None, steps run, last loss, last-10 accuracy)."""
    optimizer = torch.optim.Adam(agent.parameters(), lr=run_args.learning_rate, eps=1e-5)
    correct, solved_at, start = [], None, time.time()
    for step in range(1, args.steps + 1):
        x, cue_up = batch_of_episodes(L, args.batch, seed=args.seed * 100_000 + step)
        d = decision(agent, x)  # (batch,): logit(UP) - logit(DOWN) at the junction
        loss = F.binary_cross_entropy_with_logits(d, cue_up)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), run_args.max_grad_norm)
        optimizer.step()
        correct.append(((d > 0).float() == cue_up).float().mean().item())
        accuracy = float(np.mean(correct[-10:]))
        if step % 25 == 0:
            log(f"  {label} L {L} step {step}: loss {loss.item():.4f}, accuracy (last 10 batches) {accuracy:.2f}, {time.time() - start:.0f} s")
        if len(correct) >= 10 and accuracy >= args.stop_at > 0:
            solved_at = step
            break
    return solved_at, step, loss.item(), accuracy


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.scripts:
        module = importlib.import_module(f"ppo_{name}")  # (the repository root is on sys.path)
        run_args = model_args(module, args.set)
        for L in args.lengths:
            env = gym.make("TMazePassive-v0", corridor_length=L, carried=True)  # (its spaces depend on L)
            torch.manual_seed(args.seed)
            agent = module.Agent(env.observation_space, env.action_space, run_args)
            start = time.time()
            solved_at, steps, loss, accuracy = train(agent, run_args, L, args, label=name)
            rows.append((name, L, solved_at, steps, loss, accuracy, time.time() - start))
    options = "".join(f", {s}" for s in args.set)
    print(f"\n| model | L | solved at (steps of {args.batch} episodes) | steps run | loss | accuracy (last 10) | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, L, solved_at, steps, loss, accuracy, seconds in rows:
        print(f"| {name}{options} | {L} | {solved_at or 'never'} | {steps} | {loss:.4f} | {accuracy:.2f} | {seconds:.0f} |")
