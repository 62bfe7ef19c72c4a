"""Environments shared by every ppo_*.py script: ids, wrappers and observation encoders.

`import envs` registers every environment id of the project with gymnasium. The scripts create their
environments with `envs.make_envs(...)`, which returns a gymnasium (0.29 API) vector env whose per-env
episode statistics arrive in `infos["final_info"][i]["episode"]` and, for tasks with a goal, a boolean
`infos["final_info"][i]["success"]` at the end of each episode.

Families (each module documents its spaces):
    TMaze-v0, TMazePassive-v0                  envs/tmaze.py
    MysteryPath(-Grid)(-Easy)-v0, MortarMayhem(-Grid)-v0, SearingSpotlights-v0   envs/memorygym.py (memory-gym)
    MemoryMaze-{9x9,11x11,13x13,15x15}-v0      envs/memory_maze.py (memory-maze, MuJoCo rendering)
    Craftax-Symbolic-v1, Craftax-Classic-Symbolic-v1   envs/craftax.py (one batched JAX vector env)
Image observations reach the scripts channels-first (C, H, W) uint8: make_envs transposes HWC images.
Third-party packages (memory_gym, memory_maze, jax) are imported only when one of their envs is made.
"""

import dataclasses
import json
import warnings

import gymnasium as gym

from envs import craftax, memory_maze, memorygym
from envs.checks import check_type
from envs.encoders import action_nvec, make_encoder  # noqa: F401  (re-exported for the scripts)
from envs.wrappers import ChannelsFirst, is_hwc_image

# Ids make_envs accepts (the scripts also accept any other registered gymnasium id whose spaces they handle).
ENV_IDS = ["TMaze-v0", "TMazePassive-v0"] + memorygym.MYSTERY_PATH_IDS + memorygym.OTHER_IDS + memory_maze.ENV_IDS + craftax.ENV_IDS

# gymnasium 0.29 warns when a wrapper reads num_envs through another wrapper; harmless for us.
warnings.filterwarnings("ignore", message=".*to get variables from other wrappers is deprecated.*")

gym.register(id="TMaze-v0", entry_point="envs.tmaze:TMazeEnv")
gym.register(id="TMazePassive-v0", entry_point="envs.tmaze:TMazePassiveEnv")
# Our Mystery Path "Easy" ids (memory-gym's own ids are registered by memory_gym when it is imported).
for _id in memorygym.EASY_IDS:
    gym.register(id=_id, entry_point="envs.memorygym:make_easy_env", kwargs={"easy_id": _id})
# Memory Maze: our gymnasium envs around memory-maze's dm_env tasks (its own ids live in the old gym's registry).
for _n in memory_maze.SIZES:
    gym.register(id=f"MemoryMaze-{_n}x{_n}-v0", entry_point="envs.memory_maze:MemoryMazeEnv", kwargs={"size": _n})


def parse_env_kwargs(env_kwargs) -> dict:
    """`--env-kwargs` arrives as a JSON object string, e.g. '{"corridor_length": 60}'."""
    if isinstance(env_kwargs, dict):
        return env_kwargs
    try:
        kwargs = json.loads(env_kwargs or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"--env-kwargs must be a JSON object such as '{{\"corridor_length\": 60}}', got {env_kwargs!r} ({e})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {env_kwargs!r}")
    return kwargs


def check_env_id(env_id: str) -> None:
    if env_id in craftax.ENV_IDS:
        return
    if env_id in memorygym.BASE_IDS:
        memorygym.import_memory_gym()  # registers memory-gym's ids
    if env_id not in gym.registry:
        raise ValueError(f"unknown env id {env_id!r}. This project registers: {', '.join(ENV_IDS)} (any other registered gymnasium id also works if its spaces are supported).")


def make_env(env_id: str, render_mode=None, **kwargs):
    """One env as the scripts need it: memory-gym envs with success info, images channels-first (C, H, W)."""
    if env_id in memorygym.BASE_IDS:  # memory-gym's own ids, made through our wrappers
        env = memorygym.make_memory_gym_env(env_id, render_mode=render_mode, **kwargs)
    elif env_id == "TMaze-v0":
        # gym.make(id, max_episode_steps=N) would add a TimeLimit of its own, whose time-outs carry no success flag:
        # through the spec, the env gets max_episode_steps itself
        env = gym.make(dataclasses.replace(gym.spec(env_id), kwargs=kwargs), render_mode=render_mode)
    else:
        if "max_episode_steps" in kwargs:  # gym.make's own argument: a TimeLimit
            check_type(env_id, "max_episode_steps", kwargs["max_episode_steps"], int)
        env = gym.make(env_id, render_mode=render_mode, **kwargs)
    if is_hwc_image(env.observation_space):
        env = ChannelsFirst(env)
    return env


def make_envs(env_id: str, num_envs: int, seed: int, env_kwargs="{}", capture_video: bool = False, run_name: str = "run",
              async_envs: bool = False):
    """A vector env of `num_envs` copies of `env_id`; episode statistics recorded per env; video of env 0 if asked.

    async_envs: step the envs in worker processes (gymnasium's AsyncVectorEnv, observations through shared
    memory) instead of one after the other in this process; the same observations, rewards, infos and seeding.
    Craftax ids give one batched JAX vector env (envs/craftax.py) with the same interface (async_envs: no effect).
    """
    check_env_id(env_id)
    kwargs = parse_env_kwargs(env_kwargs)

    if env_id in craftax.ENV_IDS:
        if capture_video:
            raise ValueError(f"--capture-video is not supported for {env_id} (symbolic observations, no renderer)")
        try:
            envs = craftax.CraftaxVecEnv(env_id, num_envs, **kwargs)
        except TypeError as e:
            raise ValueError(f"{env_id} does not accept --env-kwargs {kwargs}: {e} (it accepts reset_pool_size, max_episode_steps)") from None
        envs.action_space.seed(seed)
        return envs

    def thunk(idx):
        def _make():
            try:
                if capture_video and idx == 0:
                    env = make_env(env_id, render_mode="rgb_array", **kwargs)
                    if env.render_mode != "rgb_array":
                        raise ValueError(f"--capture-video needs an env that renders rgb_array frames; {env_id} does not")
                    env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", disable_logger=True)
                else:
                    env = make_env(env_id, **kwargs)
            except TypeError as e:
                raise ValueError(f"{env_id} does not accept --env-kwargs {kwargs}: {e}") from None
            return gym.wrappers.RecordEpisodeStatistics(env)

        return _make

    if async_envs:
        # the workers make their envs themselves (a MuJoCo or pygame context is not shared across processes);
        # a bad --env-kwargs then fails in a worker, so make one env here first for the clear message
        thunk(0)().close()
        envs = gym.vector.AsyncVectorEnv([thunk(i) for i in range(num_envs)], shared_memory=True)
    else:
        envs = gym.vector.SyncVectorEnv([thunk(i) for i in range(num_envs)])
    envs.action_space.seed(seed)
    return envs
