"""benchmarks/agalite_gates.py: the gates' write and retention over a carried passive episode."""

import math

import gymnasium as gym
import torch

from conftest import load
from ppo_agalite import Agent, Args

agalite_gates = load("benchmarks/agalite_gates.py", "agalite_gates")


def test_constant_gates_give_the_closed_form_retention():
    """With the projection's weights zero, every gate is its bias: beta = sigmoid(b_beta) on every step, gamma =
    sigmoid(b_p3) sigmoid(b_gamma), so the retention over L steps is (1 - g)^L and write x retention g (1 - g)^L."""
    L, d, eta = 12, 8, 2
    env = gym.make("TMazePassive-v0", corridor_length=L, carried=True)
    agent = Agent(env.observation_space, env.action_space, Args(n_layers=2, d_model=16, n_heads=2, d_head=d, d_ffc=16, eta=eta, r=2))
    for layer in agent.layers:
        proj = layer.attention.proj
        proj.weight.data.zero_()
        bias = proj.bias.data.view(2, 5 * d + 3 * eta)
        bias[:, 3 * d : 4 * d] = -2.0  # beta
        bias[:, 4 * d : 5 * d] = -1.0  # gamma
        bias[:, 5 * d + 2 * eta :] = 0.5  # p3
    rows = agalite_gates.gate_table(agent.double(), L, n=2, seed=0)
    sigmoid = lambda z: 1 / (1 + math.exp(-z))
    beta, gamma = sigmoid(-2.0), sigmoid(0.5) * sigmoid(-1.0)
    expected = [beta, beta, (1 - beta) ** L, beta * (1 - beta) ** L, gamma, gamma, (1 - gamma) ** L, gamma * (1 - gamma) ** L]
    assert len(rows) == 2
    for row in rows:
        assert torch.allclose(torch.tensor(row[1:], dtype=torch.float64), torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
