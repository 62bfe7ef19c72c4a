"""benchmarks/memory_reach.py: the cue's effect on the junction decision, and how far back gradients reach."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import torch

import ppo_agalite
from conftest import ROOT, load
from ppo_agalite import Agent as AGaLiTeAgent, Args as AGaLiTeArgs
from ppo_gtrxl import Agent as GTrXLAgent, Args as GTrXLArgs

memory_reach = load("benchmarks/memory_reach.py", "memory_reach")


def spaces(L):
    env = gym.make("TMazePassive-v0", corridor_length=L, carried=True)
    return env.observation_space, env.action_space


def test_episodes_differ_only_in_the_cue():
    up, down = memory_reach.episodes(L=6, n=3, seed=0)
    assert up.shape == (7, 3, spaces(6)[0].shape[0])
    assert torch.equal(up[1:], down[1:]) and torch.equal(up[0, :, 2:], down[0, :, 2:])
    assert (up[0, :, :2] == torch.tensor([0.0, 1.0], dtype=up.dtype)).all()
    assert (down[0, :, :2] == torch.tensor([1.0, 0.0], dtype=up.dtype)).all()


def test_gtrxl_reaches_exactly_layers_times_memory_steps_back():
    """2 layers x memory 3: the junction sees the cue 6 steps back, and nothing of it 7 steps back."""
    args = GTrXLArgs(n_layers=2, memory_len=3, d_model=16, n_heads=2, d_head=8, d_ffc=16)
    results = {}
    for L in (6, 7):
        torch.manual_seed(0)
        agent = GTrXLAgent(*spaces(L), args).double()
        results[L] = memory_reach.measure(agent, L, n=2, seed=0)
    assert results[6][0] > 0 and results[6][1] > 0  # cue effect, gradient at the cue
    assert results[7][0] == 0 and results[7][1] == 0
    assert results[7][2] > 0  # the decision still has a gradient at its own step
    # beyond its reach, P(up) is the same whichever the cue, while the decision still moves with the distractors
    assert results[7][4] == results[7][5] and results[6][4] != results[6][5]
    assert results[7][3] > 0


def test_agalite_gate_bias_sets_only_the_forget_gates_and_reaches_further():
    args = AGaLiTeArgs(n_layers=1, d_model=16, n_heads=2, d_head=8, d_ffc=16, eta=2, r=2, gate_bias=-3.0)
    bias = AGaLiTeAgent(*spaces(4), args).layers[0].attention.proj.bias.detach().view(2, 5 * 8 + 3 * 2)
    d, eta = 8, 2
    assert (bias[:, 3 * d : 5 * d] == -3).all() and (bias[:, 5 * d + 2 * eta :] == -3).all()  # beta, gamma; p3
    assert (bias[:, : 3 * d] == 0).all() and (bias[:, 5 * d : 5 * d + 2 * eta] == 0).all()  # k, q, v; p1, p2
    ratios = {}
    for gate_bias in (0.0, -3.0):
        args.gate_bias = gate_bias
        torch.manual_seed(0)
        _, grad_cue, grad_here, *_ = memory_reach.measure(AGaLiTeAgent(*spaces(60), args).double(), 60, n=2, seed=0)
        ratios[gate_bias] = grad_cue / grad_here
    assert ratios[-3.0] > 100 * ratios[0.0]


def test_lstm_forget_bias_sets_only_the_forget_gate_and_reaches_further():
    from ppo_lstm import Agent as LSTMAgent, Args as LSTMArgs

    args = LSTMArgs(lstm_hidden=8, d_model=8, forget_bias=3.0)
    bias = LSTMAgent(*spaces(4), args).lstm_x.bias.detach()  # gates i, f, g, o
    assert (bias[8:16] == 3).all() and (bias[:8] == 0).all() and (bias[16:] == 0).all()
    ratios = {}
    for forget_bias in (0.0, 3.0):
        args.forget_bias = forget_bias
        torch.manual_seed(0)
        _, grad_cue, grad_here, *_ = memory_reach.measure(LSTMAgent(*spaces(40), args).double(), 40, n=2, seed=0)
        ratios[forget_bias] = grad_cue / grad_here
    assert ratios[3.0] > 100 * ratios[0.0]


def test_run_dir_measures_the_run_at_its_own_corridor_length(tmp_path):
    """--run-dir takes the script and L from the run's checkpoint: at L = 300 the position code has 9 bits, so a
    model built for another L would not load it; a run on another env is refused with a message."""
    small = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_ffc=16, eta=2, r=2)
    for env_id, name in (("TMazePassive-v0", "passive"), ("TMaze-v0", "active")):
        args = AGaLiTeArgs(env_id=env_id, env_kwargs=json.dumps({"corridor_length": 300, "carried": True}), **small)
        agent = AGaLiTeAgent(*spaces(300), args)
        os.makedirs(tmp_path / name)
        ppo_agalite.save_checkpoint(str(tmp_path / name / "checkpoint.pt"), agent, torch.optim.Adam(agent.parameters()), 3, 1234, args)
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "memory_reach.py"), "--episodes", "2", "--run-dir"]
    out = subprocess.run(cmd + [str(tmp_path / "passive")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (row,) = [line for line in out.stdout.splitlines() if line.startswith("| agalite |")]
    assert row.startswith("| agalite | 300 | step 1234 |")
    out = subprocess.run(cmd + [str(tmp_path / "active")], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "measures TMazePassive-v0 runs" in out.stderr and "Traceback" not in out.stderr
