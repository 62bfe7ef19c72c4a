"""The paper's other environments through envs.make_envs: Memory Gym (Mystery Path, Mortar Mayhem, Searing
Spotlights), Memory Maze and Craftax. Each family is skipped, with the reason, when its package is missing."""

import importlib.util
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import memory_maze as mm
from envs.wrappers import ChannelsFirst, FlattenMultiDiscrete

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_GYM_IDS = ["MysteryPath-Grid-v0", "MysteryPath-Grid-Easy-v0", "MysteryPath-v0", "MysteryPath-Easy-v0",
                  "MortarMayhem-v0", "MortarMayhem-Grid-v0", "SearingSpotlights-v0"]
needs_memory_gym = pytest.mark.skipif(importlib.util.find_spec("memory_gym") is None, reason="memory-gym not installed (pip install memory-gym==1.0.2)")
needs_memory_maze = pytest.mark.skipif(importlib.util.find_spec("memory_maze") is None, reason="memory-maze not installed (pip install memory-maze==1.0.3 dm-control 'mujoco<4' gym)")
needs_craftax = pytest.mark.skipif(importlib.util.find_spec("craftax") is None, reason="craftax not installed (pip install craftax==1.6.1)")


def rollout(vec, seed, actions):
    """Observations and rewards of a rollout with fixed actions, from reset(seed)."""
    obs, _ = vec.reset(seed=seed)
    observations, rewards = [np.array(obs)], []
    for a in actions:
        obs, reward, _, _, _ = vec.step(a)
        observations.append(np.array(obs))
        rewards.append(np.array(reward))
    return np.stack(observations), np.stack(rewards)


# ---- package-level ---------------------------------------------------------------------------------
def test_import_envs_stays_light():
    """`import envs` registers every id without importing pygame, memory-gym, dm_control or JAX."""
    code = ("import sys, envs; heavy = [m for m in ('pygame', 'memory_gym', 'dm_control', 'memory_maze', 'jax', 'craftax') if m in sys.modules];"
            "assert not heavy, heavy; assert 'MysteryPath-Easy-v0' in envs.ENV_IDS and 'Craftax-Symbolic-v1' in envs.ENV_IDS")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("preset", [None, "true"])
def test_jax_does_not_take_the_gpu_from_torch(preset):
    """After `import envs` (and making a Craftax env, when craftax is installed) JAX's allocator is set to
    allocate on demand instead of reserving 75% of a GPU; a value the user set is kept."""
    make = "envs.make_envs('Craftax-Classic-Symbolic-v1', 1, 0).close(); " if importlib.util.find_spec("craftax") else ""
    code = f"import os, envs; {make}import jax; print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])"
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    if preset:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = preset
    if importlib.util.find_spec("jax") is None:
        code = "import os, envs; print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == (preset or "false")


def test_unknown_id_lists_project_ids():
    with pytest.raises(ValueError, match="MemoryMaze-9x9-v0.*Craftax-Classic-Symbolic-v1"):
        envs.make_envs("NoSuchEnv-v0", 1, 0)


def test_channels_first_and_flatten_wrappers():
    class HWC(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (5, 7, 3), np.uint8)
        action_space = gym.spaces.MultiDiscrete([3, 3])

        def reset(self, *, seed=None, options=None):
            return np.arange(105, dtype=np.uint8).reshape(5, 7, 3), {}

        def step(self, action):
            self.last_action = action
            return self.reset()[0], 0.0, False, False, {}

    env = ChannelsFirst(HWC())
    assert env.observation_space.shape == (3, 5, 7)
    obs, _ = env.reset()
    assert obs.shape == (3, 5, 7) and obs.flags["C_CONTIGUOUS"] and obs[2, 4, 6] == np.arange(105).reshape(5, 7, 3)[4, 6, 2]
    flat = FlattenMultiDiscrete(HWC())
    assert flat.action_space == gym.spaces.Discrete(9)
    flat.step(5)
    assert flat.unwrapped.last_action.tolist() == [1, 2]  # 5 = 3 * 1 + 2


# ---- Memory Gym ------------------------------------------------------------------------------------
@needs_memory_gym
@pytest.mark.parametrize("env_id", MEMORY_GYM_IDS)
def test_memory_gym_spaces_and_determinism(env_id):
    vec = envs.make_envs(env_id, 2, seed=1)
    try:
        assert vec.single_observation_space == gym.spaces.Box(0, 255, (3, 84, 84), np.uint8)
        assert isinstance(vec.single_action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
        envs.action_nvec(vec.single_action_space)  # the scripts can handle it
        vec.action_space.seed(0)
        actions = [vec.action_space.sample() for _ in range(40)]
        obs1, rew1 = rollout(vec, 7, actions)
        obs2, rew2 = rollout(vec, 7, actions)
        obs3, _ = rollout(vec, 8, actions[:1])
    finally:
        vec.close()
    assert obs1.shape == (41, 2, 3, 84, 84) and obs1.dtype == np.uint8
    assert np.array_equal(obs1, obs2) and np.array_equal(rew1, rew2)
    assert not np.array_equal(obs1[0], obs3[0])  # another seed, another layout
    assert obs1.std(axis=(0, 1)).max() > 0  # something moves on screen


@needs_memory_gym
def test_mystery_path_action_spaces_and_flatten_flag():
    for env_id, space in [("MysteryPath-Grid-v0", gym.spaces.Discrete(4)), ("MysteryPath-v0", gym.spaces.MultiDiscrete([3, 3]))]:
        vec = envs.make_envs(env_id, 1, 0)
        assert vec.single_action_space == space
        vec.close()
    vec = envs.make_envs("MysteryPath-Easy-v0", 1, 0, '{"flatten_actions": true}')
    assert vec.single_action_space == gym.spaces.Discrete(9)
    vec.reset(seed=0)
    vec.step(np.array([8]))
    vec.close()
    with pytest.raises(ValueError, match="reset_options"):
        envs.make_envs("MysteryPath-v0", 1, 0, '{"bogus": 1}')
    with pytest.raises(ValueError, match="unknown reset_options"):
        envs.make_envs("MysteryPath-v0", 1, 0, '{"reset_options": {"show_gaol": true}}')


@needs_memory_gym
def test_mystery_path_easy_draws_origin_and_goal_also_after_autoreset():
    plain, easy = envs.make_envs("MysteryPath-Grid-v0", 1, 0), envs.make_envs("MysteryPath-Grid-Easy-v0", 1, 0)
    try:
        obs_plain, _ = plain.reset(seed=3)
        obs_easy, _ = easy.reset(seed=3)
        u_plain, u_easy = plain.envs[0].unwrapped, easy.envs[0].unwrapped
        assert (u_plain.start, u_plain.end) == (u_easy.start, u_easy.end)  # same path for the same seed...
        assert not np.array_equal(obs_plain, obs_easy)  # ...but Easy shows where it starts and ends
        assert u_easy.reset_params["show_goal"] and u_easy.reset_params["show_origin"] and not u_plain.reset_params["show_goal"]
        for _ in range(128):  # the 128-step limit forces an automatic reset, which passes no options itself
            _, _, term, trunc, _ = easy.step(np.array([0]))
        assert term[0] or trunc[0]
        assert u_easy.t == 0 and u_easy.reset_params["show_goal"] and u_easy.reset_params["show_origin"]
    finally:
        plain.close(), easy.close()


def _grid_oracle(u):
    """Action that walks MysteryPath-Grid's hidden path (memory-gym stores it goal-first) towards the goal."""
    pos = tuple(int(v) for v in u.agent.grid_position)
    nodes = [(n.x, n.y) for n in u.mystery_path.path]
    nxt = nodes[nodes.index(pos) - 1]
    want = {(0, -1): 0, (-1, 0): 1, (0, 1): 2, (1, 0): 3}[(nxt[0] - pos[0], nxt[1] - pos[1])]  # N, W, S, E = rotation // 90
    return 3 if u.agent.rotation // 90 == want else 1  # forward, else rotate left (+90 degrees)


@needs_memory_gym
def test_mystery_path_success_at_goal_and_timeout_is_truncation():
    vec = envs.make_envs("MysteryPath-Grid-Easy-v0", 1, 0)  # Easy: +0.1 per new path tile, so the return checks the path
    try:
        vec.reset(seed=5)
        u = vec.envs[0].unwrapped
        n_path = len(u.mystery_path.path)
        for _ in range(128):
            _, _, term, trunc, infos = vec.step(np.array([_grid_oracle(u)]))
            if term[0] or trunc[0]:
                break
        info = infos["final_info"][0]
        assert term[0] and not trunc[0] and info["success"] is True
        # reward_goal at the goal, reward_path_progress per path tile first reached except start and goal
        p = u.reset_params
        assert info["episode"]["r"][0] == pytest.approx(p["reward_goal"] + p["reward_path_progress"] * (n_path - 2), abs=1e-5)
        # standing still never reaches the goal: the 128-step limit ends it, as a truncation, without success
        for _ in range(128):
            _, _, term, trunc, infos = vec.step(np.array([0]))
        assert trunc[0] and not term[0]
        assert infos["final_info"][0]["success"] is False and infos["final_info"][0]["episode"]["l"][0] == 128
        assert infos["final_observation"][0].shape == (3, 84, 84)
    finally:
        vec.close()


# ---- Memory Maze -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def memory_maze_vec():
    try:
        vec = envs.make_envs("MemoryMaze-9x9-v0", 1, seed=0)
        vec.reset(seed=4)
    except RuntimeError as e:
        # our message when no OpenGL library can start; .ci/run installs one and sets CI_REQUIRE_GL=1
        if "apt-get install" in str(e) and not os.environ.get("CI_REQUIRE_GL"):
            pytest.skip(f"no software OpenGL for Memory Maze ({e})")
        raise
    yield vec
    vec.close()


@needs_memory_maze
def test_memory_maze_spaces_and_determinism(memory_maze_vec):
    vec = memory_maze_vec
    assert vec.single_observation_space == gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)
    assert vec.single_action_space == gym.spaces.Discrete(6)
    actions = [np.array([a]) for a in [1, 1, 2, 1, 5, 3, 1, 1]]
    obs1, rew1 = rollout(vec, 4, actions)  # reset(seed=...) rebuilds the maze from that seed
    obs2, rew2 = rollout(vec, 4, actions)
    assert obs1.shape == (9, 1, 3, 64, 64) and obs1.dtype == np.uint8
    assert np.array_equal(obs1, obs2) and np.array_equal(rew1, rew2)
    assert not np.array_equal(obs1[0], obs1[-1])  # moving forward and turning changes the view
    assert os.environ["MUJOCO_GL"] in ("egl", "osmesa", "glfw")


@needs_memory_maze
def test_memory_maze_targets_are_touched_exactly_when_dm_control_says(memory_maze_vec):
    """Our vectorised TargetSphere._update_activation (envs/memory_maze.py) against dm_control's loop, on the same
    physics states: with no target touched, and with the ball put onto each target in turn."""
    from envs import memory_maze as mm_module

    env = memory_maze_vec.envs[0].unwrapped._dm_env
    while hasattr(env, "env"):
        env = env.env  # memory_maze's wrappers -> dm_control's composer Environment
    physics, task = env.physics, env.task
    targets = task._targets

    def both(target):
        results = []
        for update in (mm_module._original_update_activation, mm_module._vectorised_update_activation):
            target._activated = False
            physics.bind(target.material).rgba[-1] = 1
            update(target, physics)
            results.append((target._activated, float(physics.bind(target.material).rgba[-1])))
        target._activated = False
        physics.bind(target.material).rgba[-1] = 1
        return results

    decisions = [both(target) for target in targets]  # at the start: no target touched
    for target in targets:
        x, y, _ = physics.bind(target.geom).xpos
        task._walker.set_pose(physics, position=[x, y, 0.0])
        physics.forward()  # recompute the contacts
        decisions += [both(t) for t in targets]
    assert all(original == ours for original, ours in decisions), decisions
    assert sum(original[0] for original, _ in decisions) == len(targets)  # each target touched once, when the ball was on it
    memory_maze_vec.reset(seed=4)  # leave the shared env as the other tests expect it


@pytest.mark.parametrize("egl, osmesa, expected", [
    ((True, "NVIDIA H100/PCIe/SSE2"), (True, "llvmpipe"), "egl"),  # EGL on a GPU first
    ((True, "llvmpipe (LLVM 15.0.6, 256 bits)"), (True, "llvmpipe"), "osmesa"),  # no GPU: OSMesa
    ((True, "llvmpipe (LLVM 15.0.6, 256 bits)"), (False, "OSError: libOSMesa.so"), "egl"),  # else EGL in software
    ((False, "EGL not found"), (False, "OSError: libOSMesa.so"), None),  # nothing: error naming the packages
])
def test_memory_maze_render_backend_choice(monkeypatch, egl, osmesa, expected):
    monkeypatch.setattr(mm, "_backend", None)
    monkeypatch.setattr(mm, "_probe", lambda backend: {"egl": egl, "osmesa": osmesa}[backend])
    monkeypatch.delenv("MUJOCO_GL", raising=False)  # also restores both variables after the test
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.delitem(sys.modules, "dm_control._render", raising=False)
    if expected is None:
        with pytest.raises(RuntimeError, match="apt-get install libosmesa6"):
            mm.choose_mujoco_gl()
    else:
        assert mm.choose_mujoco_gl() == expected
        assert os.environ["MUJOCO_GL"] == os.environ["PYOPENGL_PLATFORM"] == expected


# ---- Craftax ---------------------------------------------------------------------------------------
N_CRAFTAX, LIMIT = 4, 10


@pytest.fixture(scope="module")
def craftax_vec():
    # One env for all tests: compiling the vmapped step takes ~20 s on 2 CPU cores.
    # A 10-step time limit makes every env's episode end in the test; a pool of 2 reset worlds for 4 envs
    # makes the optimistic reset's sharing visible.
    vec = envs.make_envs("Craftax-Classic-Symbolic-v1", N_CRAFTAX, seed=0, env_kwargs=f'{{"max_episode_steps": {LIMIT}, "reset_pool_size": 2}}')
    yield vec
    vec.close()


@needs_craftax
def test_craftax_spaces_and_determinism(craftax_vec):
    vec = craftax_vec
    assert vec.num_envs == N_CRAFTAX
    assert vec.single_observation_space.shape == (1345,) and vec.single_observation_space.dtype == np.float32
    assert vec.single_action_space == gym.spaces.Discrete(17)
    actions = [np.random.default_rng(t).integers(0, 17, N_CRAFTAX) for t in range(5)]
    obs1, rew1 = rollout(vec, 3, actions)
    obs2, rew2 = rollout(vec, 3, actions)
    obs3, _ = rollout(vec, 4, actions[:1])
    assert obs1.shape == (6, N_CRAFTAX, 1345) and obs1.dtype == np.float32 and rew1.dtype == np.float32
    assert np.array_equal(obs1, obs2) and np.array_equal(rew1, rew2)
    assert not np.array_equal(obs1[0], obs3[0])
    assert not np.array_equal(obs1[0, 0], obs1[0, 1])  # each env its own world
    with pytest.raises(ValueError, match="actions of shape"):
        vec.step(np.zeros(N_CRAFTAX + 1, np.int64))


@needs_craftax
def test_craftax_autoreset_and_episode_stats(craftax_vec):
    vec = craftax_vec
    obs, _ = vec.reset(seed=11)
    rng = np.random.default_rng(0)
    returns = np.zeros(N_CRAFTAX)
    for t in range(LIMIT):
        obs, reward, term, trunc, infos = vec.step(rng.integers(0, 17, N_CRAFTAX))
        returns += reward
        assert ("final_info" in infos) == (t == LIMIT - 1)  # 10 random steps do not kill a fresh player
    assert trunc.all() and not term.any()
    for i in range(N_CRAFTAX):
        info = infos["final_info"][i]
        assert info["episode"]["l"][0] == LIMIT and info["episode"]["r"][0] == pytest.approx(returns[i])
        assert 0.0 <= info["achievements"] <= 1.0 and "success" not in info
        flags = info["achievement_flags"]  # which achievements: their mean is the share above
        assert flags.shape == (len(envs.craftax.achievement_names(vec.env_id)),) and set(flags.tolist()) <= {0, 1}
        assert flags.mean() == pytest.approx(info["achievements"])
        assert infos["final_observation"][i].shape == (1345,)
        assert not np.array_equal(infos["final_observation"][i], obs[i])  # the env moved on to a new world
    # Fresh worlds from the pool: 4 finished envs, pool of 2 -> envs 0, 2 share a world, as do 1, 3.
    assert np.array_equal(obs[0], obs[2]) and np.array_equal(obs[1], obs[3]) and not np.array_equal(obs[0], obs[1])
    assert np.asarray(vec._carry["states"].timestep).tolist() == [0] * N_CRAFTAX  # freshly generated, not stepped
    # statistics restart with the new episode
    for _ in range(LIMIT):
        _, _, term, trunc, infos = vec.step(rng.integers(0, 17, N_CRAFTAX))
    assert trunc.all() and all(infos["final_info"][i]["episode"]["l"][0] == LIMIT for i in range(N_CRAFTAX))


@needs_craftax
def test_craftax_rejects_bad_kwargs():
    with pytest.raises(ValueError, match="reset_pool_size"):
        envs.make_envs("Craftax-Classic-Symbolic-v1", 2, 0, '{"bogus": 1}')
    with pytest.raises(ValueError, match="capture-video"):
        envs.make_envs("Craftax-Classic-Symbolic-v1", 2, 0, capture_video=True)


@needs_craftax
def test_ppo_lstm_trains_on_craftax_classic_and_logs_achievements(tmp_path):
    # 8-step episodes so that episodes end inside the two updates of 4 envs x 16 steps
    cmd = [sys.executable, os.path.join(ROOT, "ppo_lstm.py"), "--env-id", "Craftax-Classic-Symbolic-v1",
           "--env-kwargs", '{"max_episode_steps": 8}', "--num-envs", "4", "--num-steps", "16",
           "--num-minibatches", "2", "--update-epochs", "1", "--total-timesteps", "128", "--lstm-hidden", "32",
           "--d-model", "32", "--no-cuda"]
    result = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=600)  # ~30 s, mostly compiling the jitted step
    assert result.returncode == 0, result.stderr[-3000:]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = (tmp_path / "runs").iterdir()
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("charts/SPS")] == [64, 128]
    assert [e.value for e in acc.Scalars("charts/episodic_length")] == [8.0, 8.0]
    assert all(0.0 <= e.value <= 1.0 for e in acc.Scalars("charts/achievements"))
    assert "charts/success_rate" not in acc.Tags()["scalars"]  # Craftax reports no success
    # one success rate per achievement and update, named as the game names them; their mean is the share above
    names = envs.craftax.achievement_names("Craftax-Classic-Symbolic-v1")
    assert {t for t in acc.Tags()["scalars"] if t.startswith("achievements/")} == {f"achievements/{n}" for n in names}
    rates = np.array([[e.value for e in acc.Scalars(f"achievements/{n}")] for n in names])  # (22, updates)
    assert rates.shape == (22, 2) and ((0 <= rates) & (rates <= 1)).all()
    np.testing.assert_allclose(rates.mean(axis=0), [e.value for e in acc.Scalars("charts/achievements")], atol=1e-6)

    # the Craftax paper's table from this run: one row per achievement, its rate over the last 10% of the points
    out = tmp_path / "table"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "plots", "craftax_achievements.py"), "--runs-dir",
                             str(tmp_path / "runs"), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (out.with_suffix(".md")).read_text().splitlines()
    assert rows[0].startswith("| achievement | ppo_lstm |")
    table = {row.split("|")[1].strip(): row.split("|")[2].strip() for row in rows[2:] if row.startswith("| ")}
    assert set(names) <= set(table) and table["collect_wood"] == f"{100 * rates[names.index('collect_wood')][-1]:.1f}"
    csv_rows = (out.with_suffix(".csv")).read_text().splitlines()
    assert csv_rows[0] == "achievement,ppo_lstm" and len(csv_rows) == 1 + len(names) + 1  # + the mean over achievements


def test_random_policy_benchmark_gives_the_t_maze_chance_level():
    """benchmarks/random_policy.py: on the T-Maze a random walk ends at the junction, where a random turn is right half
    the time; every episode's return is -0.1 per step before the junction plus +4 or -1 there, so the mean return is
    fixed by the mean length and the success rate. Bad input is one line."""
    from conftest import load

    random_policy = load("benchmarks/random_policy.py", "random_policy")
    r = random_policy.random_policy("TMaze-v0", 200, num_envs=4, seed=0, env_kwargs='{"corridor_length": 2}')
    assert r["episodes"] == 200
    assert 0.35 < r["success_rate"] < 0.65
    assert r["episodic_length"] >= 3  # at least 2 moves right and the turn
    expected = -0.1 * (r["episodic_length"] - 1) + 5 * r["success_rate"] - 1
    assert abs(r["episodic_return"] - expected) < 1e-4  # episode returns are float32 sums
    with pytest.raises(ValueError, match="must be positive"):
        random_policy.random_policy("TMaze-v0", 0)
    done = subprocess.run([sys.executable, "benchmarks/random_policy.py", "--env-id", "Nope-v0"], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode != 0 and done.stderr.strip().startswith("error: unknown env id")
    assert "Traceback" not in done.stderr
