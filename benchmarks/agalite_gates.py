"""Where does an AGaLiTe keep the passive T-Maze's cue? Its gates over one carried episode, layer by layer.

AGaLiTe's states forget through input-dependent gates (ppo_agalite.py, AGaLiTeAttention):
  value side (d per head):      tilde_v_t = (1 - beta_t)  tilde_v_{t-1} + c(t) beta_t v_t
  key side (eta*d per head):    tilde_k_t = (1 - gamma_t) tilde_k_{t-1} + c(t) gamma_t key_t,  s_t likewise,
                                gamma_t = sigmoid(p3_t) (x) sigmoid(gamma-pre-activation_t)  (an outer product)
So what the cue (step 0) writes into one feature reaches the junction (step L) scaled by
  write x retention = g_0 x prod_{t=1..L} (1 - g_t),   g = beta or gamma.
A feature can carry the cue over L steps only if the gate opens at the cue and stays nearly shut (g_t << 1/L) on
every corridor step after it. This prints, per layer, the gates' mean at the cue and along the corridor and the
largest retention and write x retention over the layer's features (the mean over episodes of the per-episode
largest), for a fresh initialisation or a trained run's checkpoint.

    python benchmarks/agalite_gates.py --length 100 --set gate_bias=-3             # at initialisation
    python benchmarks/agalite_gates.py --run-dir runs/<a passive agalite run>       # trained (its L)
"""

import json
import os
import sys
from dataclasses import dataclass, field

import gymnasium as gym
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import ppo_agalite  # noqa: E402
from memory_reach import episodes, load_run, model_args  # noqa: E402  (also registers TMazePassive-v0)


@dataclass
class Args:
    length: int = 100
    """corridor length L for a fresh initialisation (with --run-dir: the run's own)"""
    set: list = field(default_factory=list)
    """model options KEY=VALUE for a fresh initialisation (e.g. gate_bias=-3)"""
    run_dir: str = ""
    """measure the model in this run's checkpoint.pt (a TMazePassive-v0 run of ppo_agalite.py)"""
    episodes: int = 8
    """carried episodes (the cue is "up" in all; the distractors differ)"""
    seed: int = 0


def gate_table(agent, L, n, seed):
    """Rows (layer, beta at cue, beta along corridor, max retention_v, max write x retention_v, the same for gamma)."""
    layers = [block.attention for block in agent.layers]
    projections = []
    hooks = [attention.proj.register_forward_hook(lambda m, i, o: projections.append(o)) for attention in layers]
    x, _ = episodes(L, n, seed)  # (L + 1, n, obs_dim)
    done = torch.zeros(L + 1, n, dtype=x.dtype)
    done[0] = 1.0
    with torch.no_grad():
        agent.memory(x, agent.initial_state(n, "cpu"), done)
    for hook in hooks:
        hook.remove()
    rows = []
    for layer, (attention, out) in enumerate(zip(layers, projections)):
        H, d, eta = attention.n_heads, attention.d_head, attention.eta
        _, _, _, beta, gamma, _, _, p3 = out.view(L + 1, n, H, -1).split([d, d, d, d, d, eta, eta, eta], dim=-1)  # as in forward
        beta = torch.sigmoid(beta).flatten(-2)  # (L + 1, n, H*d)
        gamma = ppo_agalite.outer(torch.sigmoid(p3), torch.sigmoid(gamma)).flatten(-2)  # (L + 1, n, H*eta*d)
        row = [layer]
        for g in (beta, gamma):
            retention = torch.log1p(-g[1:]).sum(0).exp()  # prod over the corridor of (1 - g_t), (n, features)
            row += [g[0].mean().item(), g[1:].mean().item(), retention.amax(-1).mean().item(), (g[0] * retention).amax(-1).mean().item()]
        rows.append(row)
    return rows


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.run_dir:
        checkpoint, run_args = load_run(args.run_dir, ppo_agalite)
        if run_args.env_id != "TMazePassive-v0":
            raise SystemExit(f"error: {args.run_dir} is a {run_args.env_id} run, not TMazePassive-v0")
        L = json.loads(checkpoint["args"]["env_kwargs"])["corridor_length"]
        label = f"{os.path.basename(os.path.normpath(args.run_dir))} at step {checkpoint['global_step']}"
    else:
        run_args, L = model_args(ppo_agalite, args.set), args.length
        label = "initialisation" + "".join(f", {s}" for s in args.set)
    env = gym.make("TMazePassive-v0", corridor_length=L, carried=True)
    torch.manual_seed(args.seed)
    agent = ppo_agalite.Agent(env.observation_space, env.action_space, run_args)
    if args.run_dir:
        agent.load_state_dict(checkpoint["model"])
    print(f"{label}, L = {L}, {args.episodes} episodes")
    print("| layer | beta at cue | beta, corridor | max retention | max write x retention | gamma at cue | gamma, corridor | max retention | max write x retention |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in gate_table(agent.double(), L, args.episodes, args.seed):
        print(f"| {row[0]} | " + " | ".join(f"{v:.3g}" for v in row[1:]) + " |")
