"""benchmarks/passive_supervised.py: supervised training of a memory on the passive T-Maze's bit."""

import gymnasium as gym
import torch

from conftest import load
from ppo_gtrxl import Agent as GTrXLAgent, Args as GTrXLArgs

passive_supervised = load("benchmarks/passive_supervised.py", "passive_supervised")


def test_batch_labels_are_the_cue_shown_at_step_0():
    x, cue_up = passive_supervised.batch_of_episodes(L=5, n=8, seed=3)
    assert x.shape[:2] == (6, 8) and x.dtype == torch.float32
    assert 0 < cue_up.sum() < 8  # both cues occur (seed 3)
    up = torch.tensor([0.0, 1.0])
    for i in range(8):
        assert torch.equal(x[0, i, :2], up if cue_up[i] else up.flip(0))
        assert (x[1:, i, :2] == 0).all()  # the cue is shown at step 0 only


def test_a_memory_that_reaches_the_cue_learns_it_and_one_that_cannot_does_not():
    """GTrXL with 1 layer x memory 4 sees the cue 4 steps back, not 5: it learns L = 4, and stays at chance at L = 5."""
    model = GTrXLArgs(n_layers=1, memory_len=4, d_model=16, n_heads=2, d_head=8, d_ffc=16, learning_rate=3e-3)
    results = {}
    for L in (4, 5):
        env = gym.make("TMazePassive-v0", corridor_length=L, carried=True)
        torch.manual_seed(0)
        agent = GTrXLAgent(env.observation_space, env.action_space, model)
        options = passive_supervised.Args(steps=150, batch=32)
        results[L] = passive_supervised.train(agent, model, L, options, log=lambda line: None)
    solved_at, steps, loss, accuracy = results[4]
    assert solved_at is not None and accuracy >= 0.95
    solved_at, steps, loss, accuracy = results[5]
    assert solved_at is None and steps == 150 and accuracy < 0.8
