"""TMazePassive-v0 dynamics: a fixed horizon of L + 1 steps, -1/L per step that is not a move right, +1 for the
cued turn at the junction (position L), the cue only at step 0, and a time-out before the decision that ends the
episode as terminated."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.tmaze import DOWN, LEFT, RIGHT, UP, gray_code


def make(**kwargs):
    return gym.make("TMazePassive-v0", **kwargs)


def cued_turn(obs):
    return UP if obs[1] == 1.0 else DOWN  # up = [0, 1], down = [1, 0]


@pytest.mark.parametrize("L", [1, 5, 50])
def test_the_optimal_policy_walks_right_then_turns_as_cued(L):
    env = make(corridor_length=L)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        turn = cued_turn(obs)
        rewards = []
        for t in range(L):
            obs, reward, terminated, truncated, info = env.step(RIGHT)
            rewards.append(reward)
            assert not terminated and not truncated
            assert obs[:2].sum() == 0.0  # the cue is shown at step 0 only
        np.testing.assert_array_equal(obs[2:10], gray_code(L))  # at the junction, position L
        obs, reward, terminated, truncated, info = env.step(turn)
        assert terminated and not truncated and info["success"] and reward == 1.0
        assert sum(rewards) == 0.0  # L + 1 steps, return 1.0


def test_wrong_turn_gives_zero_and_each_wasted_step_costs_one_over_l():
    L = 10
    env = make(corridor_length=L)
    env.reset(seed=0)
    for action in (UP, DOWN, LEFT):  # in the corridor at position 0: no move, -1/L each
        _, reward, terminated, _, _ = env.step(action)
        assert reward == pytest.approx(-1 / L) and not terminated
    obs, _ = env.reset(seed=0)
    for _ in range(L):
        env.step(RIGHT)
    _, reward, _, _, _ = env.step(RIGHT)  # at the junction, right is not a move: -1/L
    assert reward == pytest.approx(-1 / L)
    obs, _ = env.reset(seed=1)
    wrong = DOWN if cued_turn(obs) == UP else UP
    for _ in range(L):
        env.step(RIGHT)
    _, reward, terminated, truncated, info = env.step(wrong)
    assert terminated and not truncated and reward == 0.0 and info["success"] is False


def test_a_wasted_step_leaves_the_agent_out_of_time_before_the_decision():
    L = 6
    env = make(corridor_length=L)
    env.reset(seed=0)
    _, reward, _, _, _ = env.step(LEFT)  # wasted: position stays 0
    for t in range(L - 1):
        _, reward, terminated, truncated, info = env.step(RIGHT)
        assert not terminated
    _, reward, terminated, truncated, info = env.step(RIGHT)  # step L + 1 reaches the junction: out of time
    assert terminated and not truncated and info["success"] is False
    assert env.unwrapped.t == L + 1


def test_position_code_widens_beyond_255():
    for L, bits in [(50, 8), (255, 8), (256, 9), (800, 10), (1500, 11)]:
        env = make(corridor_length=L, n_distractors=6)
        assert env.observation_space.shape == (2 + bits + 6,)
        obs, _ = env.reset(seed=0)
        assert obs.shape == env.observation_space.shape
    env = make(corridor_length=800)
    env.reset(seed=0)
    for _ in range(800):
        obs, *_ = env.step(RIGHT)
    np.testing.assert_array_equal(obs[2:12], gray_code(800, 10))


def test_registered_and_runs_in_the_vector_env():
    assert "TMazePassive-v0" in envs.ENV_IDS
    vec = envs.make_envs("TMazePassive-v0", 2, seed=0, env_kwargs='{"corridor_length": 3}')
    vec.reset(seed=0)
    ends = []
    for _ in range(8):
        _, _, terminated, truncated, infos = vec.step(np.full(2, RIGHT))
        assert not truncated.any()
        for info in infos.get("final_info", []):
            if info:
                ends.append((int(info["episode"]["l"][0]), info["success"]))
    assert ends and all(length == 4 and success is False for length, success in ends)  # never decided: out of time
    with pytest.raises(ValueError, match="corridor_length must be >= 1"):
        make(corridor_length=0)


def test_render_shows_the_junction_at_position_l():
    env = make(corridor_length=5, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(5):
        env.step(RIGHT)
    frame = env.render()
    assert frame.shape == (24, 8 * 6, 3)  # 3 rows, positions 0 .. 5, 8 pixels a cell
    assert tuple(frame[12, -4]) == (220, 0, 0)  # the agent, red, at the junction (the last column)


def test_carried_corridor_moves_the_agent_and_only_the_junction_action_counts():
    L = 7
    env = make(corridor_length=L, carried=True)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        turn = cued_turn(obs)
        for t in range(L):  # any action: one cell right, no penalty
            obs, reward, terminated, truncated, info = env.step([UP, DOWN, LEFT, RIGHT][(t + seed) % 4])
            assert reward == 0.0 and not terminated and not truncated and info == {}
            np.testing.assert_array_equal(obs[2:10], gray_code(t + 1))
            assert obs[:2].sum() == 0.0
        obs, reward, terminated, truncated, info = env.step(turn)  # step L + 1: the decision
        assert terminated and not truncated and info["success"] and reward == 1.0
    for action in (LEFT, RIGHT):  # at the junction, not turning is out of time: success False
        env.reset(seed=0)
        for _ in range(L):
            env.step(RIGHT)
        _, reward, terminated, _, info = env.step(action)
        assert terminated and info["success"] is False and reward == pytest.approx(-1 / L)
