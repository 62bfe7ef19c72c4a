"""Does Adam's eps damp the memory's updates? Adam's second moments of a run's parameters, by layer and part.

Adam moves each parameter entry by  lr * m_hat / (sqrt(v_hat) + eps),  with m_hat and v_hat the bias-corrected running
means of the gradient and of its square (beta2 = 0.999: about the last 1,000 updates). Where sqrt(v_hat) is far
below eps, the step is about lr * m_hat / eps instead of lr * sign-like m_hat / sqrt(v_hat): eps shrinks that entry's
step by the factor  sqrt(v_hat) / (sqrt(v_hat) + eps).  The release's T-Maze optimizer is optax's Adam (eps 1e-8); the
scripts' default is CleanRL's 1e-5 (docs/tmaze_protocol.md). This reads the optimizer state a run's checkpoint holds
and prints, per layer and part of the model, how many entries there are, the quartiles of sqrt(v_hat), the share of
entries with sqrt(v_hat) below each eps, and the median of the step factor above at each eps. The factors at the eps
the run did not use are what that eps would have done to the same moments (a what-if, not another run).

Parts: AGaLiTe's attention projection is split into its per-head rows (shared/AGALITE.md section 1; the names of
ppo_agalite.py's AGaLiTeAttention.forward): k, q, v (key, query, value), beta, gamma (the value and key forget gates'
d-sized factors), p1, p2, p3 (the eta-sized factors of the key and query feature maps and of the key gate). Every
other parameter is grouped by its module (attention.out, gate1 and gate2 the GRU gates, ffc, ln1 and ln2, embed,
actor, critic, ...), weights and biases together; the other scripts' parameters likewise by module.

    python benchmarks/adam_moments.py runs/<run>                       # a run's checkpoint.pt
    python benchmarks/adam_moments.py snapshots/<run>/*.pt --layers 0  # several checkpoints of one run, first layer
    python benchmarks/adam_moments.py runs/<a> runs/<b> --merge-layers --side-by-side --eps 1e-5   # one table, a column each
"""

import importlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import List

import gymnasium as gym
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import envs  # noqa: E402,F401  (registers the environment ids)


@dataclass
class Args:
    checkpoints: tyro.conf.Positional[List[str]]
    """checkpoint files, or run directories (their checkpoint.pt)"""
    eps: List[float] = field(default_factory=lambda: [1e-5, 1e-8])
    """the eps values to compare (CleanRL's 1e-5, optax's 1e-8)"""
    layers: List[int] = field(default_factory=list)
    """only these layers' rows (and the parameters outside the layers); empty: all"""
    parts: List[str] = field(default_factory=list)
    """only the parts whose name starts with one of these (e.g. attention gate1); empty: all"""
    merge_layers: bool = False
    """one row per part over all the (chosen) layers instead of one per layer and part"""
    side_by_side: bool = False
    """one table: a row per (layer, part), a column per checkpoint, each cell the median sqrt(v_hat) and the median
    step factor at the first --eps"""


AGALITE_PROJ_PARTS = ["k", "q", "v", "beta", "gamma", "p1", "p2", "p3"]


def checkpoint_path(path):
    path = os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path}: no such checkpoint (a run writes runs/<run>/checkpoint.pt with --checkpoint-every N)")
    return path


def build_agent(checkpoint):
    """The model of the script that wrote the checkpoint, with the run's own arguments and the checkpoint's weights."""
    module = importlib.import_module(checkpoint["script"][: -len(".py")])
    run_args = module.Args(**{k: v for k, v in checkpoint["args"].items() if k in module.Args.__dataclass_fields__})
    env = gym.make(run_args.env_id, **json.loads(run_args.env_kwargs or "{}"))
    agent = module.Agent(env.observation_space, env.action_space, run_args)
    agent.load_state_dict(checkpoint["model"])
    env.close()
    return agent, run_args


def split_parameter(name, tensor, agent):
    """[(layer, part, entries)] of one parameter-shaped tensor (e.g. its sqrt(v_hat)): AGaLiTe's projection by rows
    (per head: k, q, v, beta, gamma of d rows each, then p1, p2, p3 of eta rows each), anything else whole."""
    match = re.match(r"layers\.(\d+)\.(.*)", name)
    layer, rest = (int(match.group(1)), match.group(2)) if match else (None, name)
    module, _, leaf = rest.rpartition(".")
    module = module if leaf in ("weight", "bias") else rest  # gate1.b_g stays gate1.b_g
    if module.endswith("attention.proj") and match and hasattr(agent.layers[layer].attention, "eta"):
        attention = agent.layers[layer].attention
        d, eta = attention.d_head, attention.eta
        rows = tensor.reshape(attention.n_heads, 5 * d + 3 * eta, -1)  # (H, rows per head, d_model or 1)
        sizes = [d] * 5 + [eta] * 3
        return [(layer, f"attention.proj {part}", chunk.reshape(-1))
                for part, chunk in zip(AGALITE_PROJ_PARTS, rows.split(sizes, dim=1))]
    return [(layer, re.sub(r"\.\d+$", "", module or rest), tensor.reshape(-1))]  # ffc.0, ffc.2 -> ffc; actor.0 -> actor


def moments_table(checkpoint, eps_values, layers=(), merge_layers=False, parts_wanted=()):
    """Rows {layer, part, n, q25, median, q75, below[eps], factor[eps]} of sqrt(v_hat) from the checkpoint's Adam state
    (layer None: a parameter outside the layers, or with merge_layers the part's entries in every layer)."""
    agent, run_args = build_agent(checkpoint)
    optimizer_state = checkpoint["optimizer"]
    group = optimizer_state["param_groups"][0]
    beta2 = group["betas"][1]
    named = list(agent.named_parameters())
    if len(group["params"]) != len(named):
        raise SystemExit(f"error: the checkpoint's optimizer has {len(group['params'])} parameters, the model {len(named)}")
    parts = {}
    for index, (name, parameter) in zip(group["params"], named):
        state = optimizer_state["state"].get(index)
        if state is None:  # never stepped (e.g. a parameter without gradient)
            continue
        if state["exp_avg_sq"].shape != parameter.shape:
            raise SystemExit(f"error: optimizer entry {index} has shape {tuple(state['exp_avg_sq'].shape)}, {name} {tuple(parameter.shape)}")
        step = float(state["step"])
        root_v = (state["exp_avg_sq"].double() / (1 - beta2 ** step)).sqrt()  # sqrt(v_hat), torch's bias correction
        for layer, part, entries in split_parameter(name, root_v, agent):
            if (layers and layer is not None and layer not in layers) or (parts_wanted and not part.startswith(tuple(parts_wanted))):
                continue
            parts.setdefault((None if merge_layers else layer, part), []).append(entries)
    rows = []
    for (layer, part), chunks in parts.items():
        values = torch.cat(chunks)
        q25, median, q75 = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype)).tolist()
        rows.append({
            "layer": layer, "part": part, "n": values.numel(), "q25": q25, "median": median, "q75": q75,
            "below": {eps: (values < eps).double().mean().item() for eps in eps_values},
            "factor": {eps: (values / (values + eps)).median().item() for eps in eps_values},
        })
    return rows, run_args, step


def markdown(rows, eps_values):
    head = ["layer", "part", "entries", "sqrt(v_hat) q25 / median / q75"]
    head += [f"share < {eps:g}" for eps in eps_values] + [f"step factor at eps {eps:g} (median)" for eps in eps_values]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = ["all" if row["layer"] is None else str(row["layer"]), row["part"], f"{row['n']:,}",
                 f"{row['q25']:.1e} / {row['median']:.1e} / {row['q75']:.1e}"]
        cells += [f"{row['below'][eps]:.2f}" for eps in eps_values] + [f"{row['factor'][eps]:.2f}" for eps in eps_values]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def side_by_side(tables, eps):
    """[(label, rows)] -> one markdown table: a row per (layer, part) of any checkpoint (in order of appearance), a
    column per checkpoint ("-" where a model has no such part)."""
    keys = list(dict.fromkeys((row["layer"], row["part"]) for _, rows in tables for row in rows))
    lines = ["| layer | part | " + " | ".join(label for label, _ in tables) + " |", "|---|---|" + "---|" * len(tables)]
    for key in keys:
        cells = []
        for _, rows in tables:
            row = next((r for r in rows if (r["layer"], r["part"]) == key), None)
            cells.append("-" if row is None else f"{row['median']:.1e} ({row['factor'][eps]:.2f})")
        lines.append(f"| {'all' if key[0] is None else key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    args = tyro.cli(Args)
    if any(eps <= 0 for eps in args.eps):
        raise SystemExit(f"error: --eps must be positive, got {args.eps}")
    torch.set_num_threads(1)
    tables = []
    for path in args.checkpoints:
        path = checkpoint_path(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own file: it holds numpy states
        if "optimizer" not in checkpoint or "script" not in checkpoint:
            raise SystemExit(f"error: {path} is not a checkpoint of one of the ppo_*.py scripts")
        rows, run_args, step = moments_table(checkpoint, args.eps, args.layers, args.merge_layers, args.parts)
        if args.side_by_side:
            corridor = json.loads(run_args.env_kwargs or "{}").get("corridor_length", "")
            tables.append((f"{checkpoint['script'][4:-3]} {corridor} s{run_args.seed} {checkpoint['global_step'] / 1e6:.2f}M", rows))
            continue
        print(f"\n{path}: {checkpoint['script']} on {run_args.env_id} {run_args.env_kwargs}, environment step "
              f"{checkpoint['global_step']:,} (Adam step {step:.0f}), the run's eps {getattr(run_args, 'adam_eps', 1e-5):g}")
        print("\n".join(markdown(rows, args.eps)))
    if args.side_by_side:
        print(f"median sqrt(v_hat) (median step factor at eps {args.eps[0]:g}); columns: script, corridor, seed, environment step")
        print("\n".join(side_by_side(tables, args.eps[0])))
