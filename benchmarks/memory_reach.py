"""How far back does each memory reach, before and after training? A diagnostic for the passive T-Maze sweep.

In TMazePassive-v0 (carried) the only decision is at the junction, L steps after the cue. A policy gradient can
teach the memory to keep the cue only if the junction's action probabilities depend on the cue in the first
place. This measures that dependence for whole episodes evaluated as one training sequence (T = L + 1, as the
sweep trains them), in float64, averaged over episodes and initialisations:

- `cue_effect`: |d(up) - d(down)|, where d = logit(UP) - logit(DOWN) at the junction, for the same episode with
  the cue flipped (every other observation equal): how much the decision moves with the cue, in logits.
- `spread`: the standard deviation of d over the episodes (cue "up" in all): how much the decision moves with
  everything but the cue (the distractor bits along the way); `P(up)`: the mean of sigmoid(d), the probability of
  UP given a turn, with the cue "up" and with it "down" (a policy that ignores the cue gives the two the same).
- `grad_cue`: the norm of the gradient of d with respect to the first observation (the cue), and `grad_here`:
  with respect to the junction's own observation; `ratio` = grad_cue / grad_here: how much of the gradient
  that trains the decision reaches back to the cue (GTrXL-128's 4 layers cannot reach further than 4 x 128
  steps: 0 exactly beyond).

    python benchmarks/memory_reach.py --lengths 50 100 200 400 800
    python benchmarks/memory_reach.py --scripts agalite --set gate_bias=-3 --lengths 100 400 800
    python benchmarks/memory_reach.py --run-dir runs/<a passive run>  # trained: the run's model at its L
"""

import importlib
import json
import os
import sys
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import envs  # noqa: E402,F401  (registers TMazePassive-v0)
from envs.tmaze import DOWN, UP  # noqa: E402  (the decision's two actions)


@dataclass
class Args:
    scripts: list = field(default_factory=lambda: ["agalite", "gtrxl", "lstm"])
    """which ppo_<name>.py models, at their default sizes"""
    lengths: list = field(default_factory=lambda: [50, 100, 200, 400, 800])
    """corridor lengths L (the cue is held for L steps)"""
    inits: int = 4
    """random initialisations per model (seeds 0 .. inits - 1); ignored with --run-dir"""
    episodes: int = 8
    """episodes per initialisation (each also with its cue flipped)"""
    set: list = field(default_factory=list)
    """model options KEY=VALUE for the fresh initialisations (e.g. gate_bias=-3), as the script's --key value"""
    run_dir: str = ""
    """measure the model in this run's checkpoint.pt instead of fresh initialisations: its script and its corridor
    length (--scripts and --lengths are then taken from the run)"""
    threads: int = 1
    """torch.set_num_threads"""


def model_args(module, settings):
    """module.Args with KEY=VALUE settings, parsed by the script's own command line (`--key=value`)."""
    return tyro.cli(module.Args, args=[f"--{key.replace('_', '-')}={value}" for key, _, value in (s.partition("=") for s in settings)])


def script_module(checkpoint):
    """The ppo_<name> module whose script wrote the checkpoint."""
    return importlib.import_module(checkpoint["script"][: -len(".py")])


def load_run(run_dir, module=None):
    """(the run's checkpoint, module.Args with the run's own arguments) for a run of module's script; without a
    module, the script that wrote the checkpoint is imported."""
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), map_location="cpu", weights_only=False)
    module = module or script_module(checkpoint)
    if checkpoint["script"] != f"{module.__name__}.py":
        raise SystemExit(f"error: {run_dir} was written by {checkpoint['script']}, not {module.__name__}.py")
    return checkpoint, module.Args(**{k: v for k, v in checkpoint["args"].items() if k in module.Args.__dataclass_fields__})


def episodes(L, n, seed):
    """n carried passive episodes walked to the junction, as (L + 1, n, obs_dim) float64, cue up in every one,
    and the same with the cue flipped (only the first observation's two cue bits differ)."""
    env = gym.make("TMazePassive-v0", corridor_length=L, carried=True).unwrapped
    obs = []
    for i in range(n):
        first, _ = env.reset(seed=seed * 1000 + i)
        first[:2] = [0.0, 1.0]  # cue "up" (envs/tmaze.py: up = [0, 1], down = [1, 0])
        steps = [first] + [env.step(0)[0] for _ in range(L)]  # carried: any action walks on
        obs.append(np.stack(steps))
    up = torch.as_tensor(np.stack(obs, axis=1), dtype=torch.float64)
    down = up.clone()
    down[0, :, :2] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    return up, down


def decision(agent, x):
    """d = logit(UP) - logit(DOWN) at the last step of x (T, B, obs_dim), one sequence from a fresh state."""
    T, B = x.shape[:2]
    done = torch.zeros(T, B, dtype=x.dtype)
    done[0] = 1.0
    hidden, _ = agent.memory(x, agent.initial_state(B, "cpu"), done)
    logits = agent.actor(hidden[-1])
    return logits[:, UP] - logits[:, DOWN]  # (B,)


def measure(agent, L, n, seed):
    up, down = episodes(L, n, seed)
    with torch.no_grad():
        d_up, d_down = decision(agent, up), decision(agent, down)
    cue_effect = (d_up - d_down).abs().mean().item()
    spread = d_up.std().item() if n > 1 else 0.0
    p_up = torch.sigmoid(d_up).mean().item(), torch.sigmoid(d_down).mean().item()
    x = up.clone().requires_grad_()
    (grad,) = torch.autograd.grad(decision(agent, x).sum(), x)  # each episode's d depends on its own inputs only
    grad_cue, grad_here = grad[0].norm(dim=-1).mean().item(), grad[-1].norm(dim=-1).mean().item()
    return cue_effect, grad_cue, grad_here, spread, *p_up


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    if args.run_dir:  # the run's own script and corridor length
        checkpoint, run_args = load_run(args.run_dir)
        if run_args.env_id != "TMazePassive-v0":
            raise SystemExit(f"error: {args.run_dir} is a run on {run_args.env_id}; --run-dir measures TMazePassive-v0 runs")
        args.scripts = [script_module(checkpoint).__name__.removeprefix("ppo_")]
        args.lengths = [json.loads(run_args.env_kwargs).get("corridor_length", 100)]  # (the env's default)
    print("| model | L | source | cue_effect (logits) | spread (logits) | P(up): cue up, down | grad_cue | grad_here | ratio |")
    print("|---|---:|---|---:|---:|---|---:|---:|---:|")
    for name in args.scripts:
        module = importlib.import_module(f"ppo_{name}")  # (the repository root is on sys.path)
        if args.run_dir:
            label = f"step {checkpoint['global_step']}"
        else:
            run_args = model_args(module, args.set)
            label = f"init x {args.inits}" + "".join(f", {s}" for s in args.set)
        for L in args.lengths:
            env = gym.make("TMazePassive-v0", corridor_length=L, carried=True)  # (its spaces depend on L)
            rows = []
            for seed in [0] if args.run_dir else range(args.inits):
                torch.manual_seed(seed)
                agent = module.Agent(env.observation_space, env.action_space, run_args)
                if args.run_dir:
                    agent.load_state_dict(checkpoint["model"])
                rows.append(measure(agent.double(), L, args.episodes, seed))
            cue_effect, grad_cue, grad_here, spread, p_up, p_up_down = np.mean(rows, axis=0)
            print(f"| {name} | {L} | {label} | {cue_effect:.3g} | {spread:.3g} | {p_up:.2f}, {p_up_down:.2f} | {grad_cue:.3g} | {grad_here:.3g} | {grad_cue / grad_here:.3g} |", flush=True)
