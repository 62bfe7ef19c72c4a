"""Memory Gym through the scripts' interface, checks that complement tests/test_envs_more.py (which covers
spaces, seeded determinism, the Easy Grid variant, the Mystery Path oracle run and the timeout-as-truncation
rule): a missing package gives a clear error, every id reports a boolean `success` at each episode end, the
continuous Easy variant draws origin and goal, and a training script runs on MysteryPath-Grid-v0.

Tests that need memory-gym skip without it (pip install memory-gym==1.0.2)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import envs
from conftest import ROOT

IDS = ["MysteryPath-Grid-v0", "MysteryPath-Grid-Easy-v0", "MysteryPath-v0", "MysteryPath-Easy-v0",
       "MortarMayhem-Grid-v0", "MortarMayhem-v0", "SearingSpotlights-v0"]


@pytest.fixture
def memory_gym():
    return pytest.importorskip("memory_gym", reason="memory-gym not installed (pip install memory-gym==1.0.2)")


def test_ids_listed():
    assert set(IDS) <= set(envs.ENV_IDS)


@pytest.mark.parametrize("env_id", ["MysteryPath-Grid-v0", "MysteryPath-Easy-v0"])
def test_missing_package_names_the_pip_package(env_id, monkeypatch):
    monkeypatch.setitem(sys.modules, "memory_gym", None)  # `import memory_gym` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install memory-gym==1\.0\.2"):
        envs.make_envs(env_id, 1, 0)


def _first_episode_ends(vec, max_steps):
    """final_info entries (with terminated, truncated) of the first vector step where some episode ends."""
    vec.reset(seed=0)
    vec.action_space.seed(0)
    for _ in range(max_steps):
        _, _, term, trunc, infos = vec.step(vec.action_space.sample())
        if "final_info" in infos:
            return [(fi, bool(te), bool(tr)) for fi, te, tr in zip(infos["final_info"], term, trunc) if fi is not None]
    raise AssertionError(f"no episode ended in {max_steps} random steps")


@pytest.mark.parametrize("env_id", IDS)
def test_success_at_every_episode_end(env_id, memory_gym):
    # Mystery Path and Searing Spotlights take a step limit (memory-gym reset parameter max_steps); Mortar
    # Mayhem has none, but random moves fail a command within about 60 steps (walked off the commanded tile).
    kwargs = '{"reset_options": {"max_steps": 6}}' if "MortarMayhem" not in env_id else "{}"
    vec = envs.make_envs(env_id, 2, seed=0, env_kwargs=kwargs)
    try:
        ends = _first_episode_ends(vec, 300)
    finally:
        vec.close()
    for info, term, trunc in ends:
        assert term != trunc
        assert type(info["success"]) is bool
        assert info["episode"]["l"][0] >= 1 and np.isfinite(info["episode"]["r"][0])
        if not info["success"] and env_id.startswith("MysteryPath"):
            assert trunc  # Mystery Path's only terminal state is the goal: a timeout is a truncation
        if info["success"] and env_id.startswith("MysteryPath"):
            assert term
        if env_id.startswith("SearingSpotlights"):
            # the 6-step limit, with health left: a timeout (truncated); no health left: terminal
            timed_out = not info["success"] and info["agent_health"] > 0
            assert trunc == timed_out
            assert timed_out == (info["episode"]["l"][0] == 6)


def test_continuous_easy_draws_origin_and_goal(memory_gym):
    plain, easy = envs.make_envs("MysteryPath-v0", 1, 0), envs.make_envs("MysteryPath-Easy-v0", 1, 0)
    try:
        obs_plain, _ = plain.reset(seed=3)
        obs_easy, _ = easy.reset(seed=3)
        # same maze for the same seed, so the first frames differ only where Easy draws origin and goal
        assert plain.envs[0].unwrapped.end == easy.envs[0].unwrapped.end
        assert obs_plain.shape == obs_easy.shape == (1, 3, 84, 84)
        assert not np.array_equal(obs_plain, obs_easy)
    finally:
        plain.close(), easy.close()


def test_ppo_lstm_trains_on_mystery_path_grid(tmp_path, memory_gym):
    cmd = [sys.executable, os.path.join(ROOT, "ppo_lstm.py"), "--env-id", "MysteryPath-Grid-v0",
           "--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
           "--total-timesteps", "64", "--lstm-hidden", "32", "--d-model", "32", "--no-cuda"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # ~10 s
    assert result.returncode == 0, result.stderr[-3000:]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = (tmp_path / "runs").iterdir()
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("charts/SPS")] == [32, 64]  # two updates of 2 envs x 16 steps
