"""--async-envs: the worker-process vector env gives exactly what the in-process one gives (observations,
rewards, ends, episode statistics, success, final observations), with the same seeding; a script trains with it."""

import glob
import importlib.util
import json
import subprocess

import gymnasium as gym
import numpy as np
import pytest

import envs
from test_scripts import cli


def assert_same(a, b, where="infos"):
    """Recursive equality of info dicts and arrays, ignoring the episodes' wall-clock times ("t")."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            if key != "t":
                assert_same(a[key], b[key], f"{where}[{key}]")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert a.shape == b.shape, where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif a is None or isinstance(a, (bool, np.bool_)):
        assert a == b, where
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


CASES = [("TMaze-v0", '{"corridor_length": 3}', 4), ("TMazePassive-v0", '{"corridor_length": 4}', 4)]
if importlib.util.find_spec("memory_gym") is not None:
    CASES.append(("MysteryPath-Grid-v0", "{}", 4))


@pytest.mark.parametrize("env_id, kwargs, n_actions", CASES)
def test_async_envs_step_exactly_as_the_sync_ones(env_id, kwargs, n_actions):
    sync = envs.make_envs(env_id, 3, seed=5, env_kwargs=kwargs)
    workers = envs.make_envs(env_id, 3, seed=5, env_kwargs=kwargs, async_envs=True)
    try:
        assert isinstance(workers, gym.vector.AsyncVectorEnv) and isinstance(sync, gym.vector.SyncVectorEnv)
        obs_s, info_s = sync.reset(seed=5)
        obs_w, info_w = workers.reset(seed=5)
        np.testing.assert_array_equal(obs_s, obs_w)
        assert_same(info_s, info_w)
        rng = np.random.default_rng(0)
        ended = 0
        for t in range(80):
            actions = np.where(rng.random(3) < 0.6, 3, rng.integers(0, n_actions, 3))  # mostly right: episodes end
            out_s, out_w = sync.step(actions), workers.step(actions)
            for x, y in zip(out_s[:4], out_w[:4]):
                np.testing.assert_array_equal(x, y)
            assert_same(out_s[4], out_w[4], f"step {t} infos")
            ended += int(np.logical_or(out_s[2], out_s[3]).sum())
        assert ended > 0 or env_id.startswith("MysteryPath")  # the T-Mazes end episodes (final_info compared)
    finally:
        sync.close()
        workers.close()


def test_a_script_trains_with_async_envs(tmp_path):
    cmd = cli("ppo_lstm", total_timesteps=64, num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1, cuda=False,
              env_kwargs=json.dumps({"corridor_length": 2}), async_envs=True)
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert glob.glob(str(tmp_path / "runs" / "TMaze-v0__ppo_lstm__1__*" / "events.out.tfevents.*"))


def test_async_envs_refuse_bad_kwargs_clearly():
    with pytest.raises(ValueError, match="does not accept --env-kwargs"):
        envs.make_envs("TMaze-v0", 2, seed=0, env_kwargs='{"no_such_option": 1}', async_envs=True)


def test_env_speed_benchmark_times_both_vector_envs():
    from conftest import load

    env_speed = load("benchmarks/env_speed.py", "env_speed")
    rows = [env_speed.measure("TMaze-v0", 2, 0.05, 0, async_envs=mode) for mode in (False, True)]
    assert [r["vector"] for r in rows] == ["sync", "async"]
    assert all(r["env_steps_per_s"] > 0 for r in rows)
