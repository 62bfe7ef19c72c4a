"""Environments shared by every ppo_*.py script: ids, wrappers and observation encoders.

`import envs` registers every environment id of the project with gymnasium. The scripts create their
environments with `envs.make_envs(...)`, which returns a gymnasium (0.29 API) vector env whose per-env
episode statistics arrive in `infos["final_info"][i]["episode"]` and, for tasks with a goal, a boolean
`infos["final_info"][i]["success"]` at the end of each episode.
"""

import json
import warnings

import gymnasium as gym

from envs.encoders import action_nvec, make_encoder  # noqa: F401  (re-exported for the scripts)

# Ids this package registers (the scripts also accept any other registered gymnasium id whose spaces they handle).
ENV_IDS = ["TMaze-v0"]

# gymnasium 0.29 warns when a wrapper reads num_envs through another wrapper; harmless for us.
warnings.filterwarnings("ignore", message=".*to get variables from other wrappers is deprecated.*")

gym.register(id="TMaze-v0", entry_point="envs.tmaze:TMazeEnv")


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
    if env_id not in gym.registry:
        raise ValueError(f"unknown env id {env_id!r}. This project registers: {', '.join(ENV_IDS)} (any other registered gymnasium id also works if its spaces are supported).")


def make_envs(env_id: str, num_envs: int, seed: int, env_kwargs="{}", capture_video: bool = False, run_name: str = "run"):
    """A vector env of `num_envs` copies of `env_id`; episode statistics recorded per env; video of env 0 if asked."""
    check_env_id(env_id)
    kwargs = parse_env_kwargs(env_kwargs)

    def thunk(idx):
        def _make():
            try:
                if capture_video and idx == 0:
                    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
                    if env.render_mode != "rgb_array":
                        raise ValueError(f"--capture-video needs an env that renders rgb_array frames; {env_id} does not")
                    env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", disable_logger=True)
                else:
                    env = gym.make(env_id, **kwargs)
            except TypeError as e:
                raise ValueError(f"{env_id} does not accept --env-kwargs {kwargs}: {e}") from None
            return gym.wrappers.RecordEpisodeStatistics(env)

        return _make

    envs = gym.vector.SyncVectorEnv([thunk(i) for i in range(num_envs)])
    envs.action_space.seed(seed)
    return envs
