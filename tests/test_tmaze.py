"""T-Maze dynamics: the task must be exactly the paper's (shared/AGALITE.md section 6)."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers TMaze-v0)
from envs.tmaze import DOWN, LEFT, RIGHT, UP, gray_code


def make(**kwargs):
    return gym.make("TMaze-v0", **kwargs)


def cue_of(obs):
    return obs[:2]


def test_observation_layout_and_cue_only_on_first_step():
    env = make(corridor_length=5, n_distractors=6)
    assert env.observation_space.shape == (16,)
    obs, _ = env.reset(seed=0)
    assert cue_of(obs).sum() == 1.0  # exactly one cue bit is set
    assert np.all(obs[10:] == 0)  # no distractors on the first step
    for _ in range(20):
        obs, *_ = env.step(RIGHT)
        assert np.all(cue_of(obs) == 0)


def test_cue_encodes_the_rewarded_turn():
    for seed in range(20):
        env = make(corridor_length=3)
        obs, _ = env.reset(seed=seed)
        turn = UP if np.array_equal(cue_of(obs), [0, 1]) else DOWN
        assert np.array_equal(cue_of(obs), [0, 1]) or np.array_equal(cue_of(obs), [1, 0])
        for _ in range(2):
            env.step(RIGHT)
        _, reward, terminated, truncated, info = env.step(turn)
        assert (reward, terminated, truncated, info["success"]) == (4.0, True, False, True)


def test_gray_code_of_position():
    assert np.array_equal(gray_code(0), np.zeros(8))
    codes = [gray_code(n) for n in range(256)]
    # consecutive positions differ in exactly one bit, and all 256 codes are distinct
    assert all(np.abs(codes[n + 1] - codes[n]).sum() == 1 for n in range(255))
    assert len({c.tobytes() for c in codes}) == 256
    assert np.array_equal(gray_code(5), [0, 0, 0, 0, 0, 1, 1, 1])  # 5 = 101b -> gray 111b
    env = make(corridor_length=20)
    env.reset(seed=0)
    for pos in range(1, 25):
        obs, *_ = env.step(RIGHT)
        assert np.array_equal(obs[2:10], gray_code(min(pos, 19)))  # clipped at the junction


def test_distractors_are_random_bits():
    env = make(corridor_length=50, n_distractors=6)
    env.reset(seed=0)
    bits = np.array([env.step(LEFT)[0][10:] for _ in range(400)])
    assert set(np.unique(bits)) == {0.0, 1.0}
    assert 0.4 < bits.mean() < 0.6
    assert make(n_distractors=0).observation_space.shape == (10,)


def test_rewards_and_junction():
    env = make(corridor_length=4)
    obs, _ = env.reset(seed=3)
    wrong = DOWN if np.array_equal(cue_of(obs), [0, 1]) else UP
    # up/down in the corridor is a no-op costing -0.1
    obs, reward, terminated, _, _ = env.step(wrong)
    assert (reward, terminated) == (-0.1, False)
    assert np.array_equal(obs[2:10], gray_code(0))
    # left at the start stays put
    obs, reward, *_ = env.step(LEFT)
    assert reward == -0.1 and np.array_equal(obs[2:10], gray_code(0))
    for _ in range(3):
        _, reward, terminated, _, _ = env.step(RIGHT)
        assert (reward, terminated) == (-0.1, False)
    _, reward, terminated, truncated, info = env.step(wrong)
    assert (reward, terminated, truncated, info["success"]) == (-1.0, True, False, False)


def test_truncation_at_max_steps():
    env = make(corridor_length=5)
    env.reset(seed=0)
    for t in range(1, 1001):
        _, reward, terminated, truncated, info = env.step(LEFT)
        assert not terminated
        assert truncated == (t == 1000)
    assert info["success"] is False


def test_seeding_is_deterministic():
    def rollout(seed):
        env = make(corridor_length=8)
        out = [env.reset(seed=seed)[0]]
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs, *_, term, trunc, _ = env.step(int(rng.integers(4)))
            out.append(obs)
            if term or trunc:
                out.append(env.reset()[0])
        return np.array(out)

    assert np.array_equal(rollout(7), rollout(7))
    assert not np.array_equal(rollout(7), rollout(8))


def test_scripted_optimal_policy_gets_the_best_return():
    length = 12
    env = make(corridor_length=length)
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        turn = UP if np.array_equal(cue_of(obs), [0, 1]) else DOWN
        total, done = 0.0, False
        while not done:
            at_junction = np.array_equal(obs[2:10], gray_code(length - 1))
            obs, reward, terminated, truncated, info = env.step(turn if at_junction else RIGHT)
            total += reward
            done = terminated or truncated
        assert info["success"]
        assert total == pytest.approx(4.0 - 0.1 * (length - 1))


def test_bad_corridor_length_is_refused_clearly():
    with pytest.raises(ValueError, match="8-bit position code"):
        make(corridor_length=300)
    with pytest.raises(ValueError, match="8-bit position code"):
        make(corridor_length=0)


def test_unknown_env_id_and_kwargs_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown env id 'NoSuchEnv-v0'"):
        envs.make_envs("NoSuchEnv-v0", 1, 0)
    with pytest.raises(ValueError, match="does not accept --env-kwargs"):
        envs.make_envs("TMaze-v0", 1, 0, '{"corridor_lenght": 5}')
    with pytest.raises(ValueError, match="JSON object"):
        envs.make_envs("TMaze-v0", 1, 0, "corridor_length=5")


def test_vector_env_reports_episode_and_success():
    vec = envs.make_envs("TMaze-v0", 2, 0, '{"corridor_length": 2}')
    obs, _ = vec.reset(seed=0)
    turns = np.where(obs[:, 1] == 1, UP, DOWN)
    vec.step(np.array([RIGHT, RIGHT]))
    _, rewards, terminations, _, infos = vec.step(turns)
    assert np.all(terminations) and np.allclose(rewards, 4.0)
    for info in infos["final_info"]:
        assert info["success"] is True
        assert info["episode"]["l"][0] == 2 and info["episode"]["r"][0] == pytest.approx(3.9)


def test_render_draws_the_agent_in_the_corridor():
    env = make(corridor_length=6, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (24, 48, 3) and frame.dtype == np.uint8
    assert tuple(frame[12, 4]) == (220, 0, 0)  # agent at position 0, middle row
    env.step(RIGHT)
    assert tuple(env.render()[12, 12]) == (220, 0, 0)


def test_exploration_probability_matches_a_random_policy_in_the_env():
    """benchmarks/tmaze_exploration.py's exact chance agrees with random play in the real env."""
    from conftest import load

    module = load("benchmarks/tmaze_exploration.py", "tmaze_exploration")
    length, limit, episodes = 8, 40, 600
    env = make(corridor_length=length, max_episode_steps=limit)
    rng = np.random.default_rng(0)
    reached = 0
    for seed in range(episodes):
        env.reset(seed=seed)
        for _ in range(limit):
            action = int(rng.integers(4))
            if env.unwrapped.position == length - 1 and action in (UP, DOWN):
                action = RIGHT  # count arriving at the junction, not turning there
            env.step(action)
            if env.unwrapped.position == length - 1:
                reached += 1
                break
    p = module.reach_probability(length, limit)
    assert 0.1 < p < 0.9
    assert abs(reached / episodes - p) < 4 * np.sqrt(p * (1 - p) / episodes)


def test_simulated_initial_policy_matches_the_exact_chance_for_a_uniform_policy():
    """tmaze_exploration.simulate_policy: a uniform policy reaches the junction as often as the exact
    dynamic program says; a policy that always walks right reaches it in every episode."""
    import torch
    from conftest import load

    module = load("benchmarks/tmaze_exploration.py", "tmaze_exploration")

    class FixedPolicy:  # the same action probabilities everywhere, no memory
        def __init__(self, logits):
            self.logits = torch.tensor(logits)

        def initial_state(self, batch_size, device):
            return None

        def memory(self, x, state, done):
            return x, state

        def actor(self, hidden):
            return self.logits.expand(*hidden.shape[:-1], 4)

        def critic(self, hidden):
            return hidden[..., 4:5] * 10.0  # the position code's 2**5 Gray bit (obs[4]): 10 at positions 32 .. 63

    length, limit, episodes = 8, 40, 600
    reached, furthest = module.simulate_policy(FixedPolicy([0.0, 0.0, 0.0, 0.0]), length, limit, episodes, seed=0)
    p = module.reach_probability(length, limit)
    assert abs(reached.mean() - p) < 4 * np.sqrt(p * (1 - p) / episodes)
    assert (furthest[reached] == length - 1).all() and (furthest[~reached] < length - 1).all()
    right = np.full(4, -20.0)
    right[RIGHT] = 0.0
    reached, furthest = module.simulate_policy(FixedPolicy(right.tolist()), length, limit, 5, seed=0)
    assert reached.all() and (furthest == length - 1).all()
    value, drift = module.walk_profile(FixedPolicy(right.tolist()), 100, [0, 31, 32, 63], 3, seed=0)
    assert np.allclose(value, [0, 0, 10, 10]) and np.allclose(drift, 1.0, atol=1e-6)


def test_timeout_value_by_position():
    """tmaze_exploration.timeout_value_by_position: by hand for a 2-step limit, and rising along corridor 120."""
    from conftest import load

    module = load("benchmarks/tmaze_exploration.py", "tmaze_exploration")
    gamma = 0.9
    value = module.timeout_value_by_position(10, 2, gamma)
    # position 0: at t = 0 (probability 1, 2 steps left) and t = 1 (probability 0.75, 1 step left); position 1: t = 1 only
    assert np.isclose(value[0], (1.0 * -0.1 * (1 + gamma) + 0.75 * -0.1) / 1.75)
    assert np.isclose(value[1], -0.1)
    value = module.timeout_value_by_position(120, 1000, 0.99)
    assert (np.diff(value[:80]) > 0).all() and value[0] > -10


def test_run_rows_rebuild_the_runs_initial_network(tmp_path):
    """tmaze_exploration --run-dirs: the "init" row is the run's own initial network (its seed, its arguments), so a
    checkpoint that holds exactly that network gives the same numbers in both rows."""
    import dataclasses

    import gymnasium as gym
    import torch
    from conftest import load

    import ppo_agalite

    module = load("benchmarks/tmaze_exploration.py", "tmaze_exploration")
    run_args = ppo_agalite.Args(env_kwargs='{"corridor_length": 12}', seed=3, exp_name="probe", n_layers=1, d_model=16, n_heads=2, d_head=8, d_ffc=16)
    env = gym.make("TMaze-v0", corridor_length=12)
    torch.manual_seed(3)
    agent = ppo_agalite.Agent(env.observation_space, env.action_space, run_args)
    torch.save({"script": "ppo_agalite.py", "args": dataclasses.asdict(run_args), "global_step": 2048, "model": agent.state_dict()}, tmp_path / "checkpoint.pt")
    args = module.Args(lengths=[12], run_dirs=[str(tmp_path)], value_positions=[0, 5, 11], episodes=3, max_episode_steps=50)
    positions, rows = module.run_rows(args)
    assert positions == [0, 5, 11] and len(rows) == 2
    assert "| init |" in rows[0] and "| 2,048 |" in rows[1]
    assert rows[0].split("| init |")[1] == rows[1].split("| 2,048 |")[1]
