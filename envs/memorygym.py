"""Memory Gym (memory-gym 1.0.2) environments: Mystery Path as the AGaLiTe paper ran it, plus Mortar Mayhem
and Searing Spotlights.

memory-gym registers its own ids (`MysteryPath-v0`, `MysteryPath-Grid-v0`, ...) when `memory_gym` is
imported. Importing it starts pygame, so this module imports it only when one of its envs is made.
This project adds the paper's "Easy" Mystery Path settings as ids of its own:

    MysteryPath-Grid-v0        grid movement, Discrete(4), 128-step limit
    MysteryPath-Grid-Easy-v0   same, with the path's origin and goal drawn
    MysteryPath-v0             continuous movement, MultiDiscrete([3, 3]), 512-step limit
    MysteryPath-Easy-v0        same, with the path's origin and goal drawn

"Easy" = reset options {"show_origin": True, "show_goal": True, "reward_path_progress": 0.1}, passed on
every reset, automatic resets included.

Observations are 84x84x3 uint8 (make_envs turns them channels-first). memory-gym reports an episode's
end only through `done`; this module adds, at the last step, a boolean `info["success"]` (memory-gym's
own 0/1 `success`: goal reached / task completed). Episodes that ran out of time are reported as
`truncated` (not `terminated`) so that the scripts bootstrap from them, as gymnasium's API means:
in Mystery Path the only terminal event is reaching the goal, so every end without success is a timeout;
in Searing Spotlights an end without success while the agent still has health is a timeout (no health
left = terminal). Mortar Mayhem has no time limit (an episode ends on a wrong or the last command).
"""

import os

import gymnasium as gym

from envs.checks import check_type
from envs.wrappers import FlattenMultiDiscrete, ResetOptions

MYSTERY_PATH_IDS = ["MysteryPath-Grid-v0", "MysteryPath-Grid-Easy-v0", "MysteryPath-v0", "MysteryPath-Easy-v0"]
OTHER_IDS = ["MortarMayhem-v0", "MortarMayhem-Grid-v0", "SearingSpotlights-v0"]
# ids that memory-gym itself registers (on import) and that make_envs accepts
BASE_IDS = ["MysteryPath-Grid-v0", "MysteryPath-v0"] + OTHER_IDS
EASY_OPTIONS = {"show_origin": True, "show_goal": True, "reward_path_progress": 0.1}
# our id -> (memory-gym id, fixed reset options)
EASY_IDS = {
    "MysteryPath-Grid-Easy-v0": ("MysteryPath-Grid-v0", EASY_OPTIONS),
    "MysteryPath-Easy-v0": ("MysteryPath-v0", EASY_OPTIONS),
}


def import_memory_gym():
    """Imports memory_gym (registering its ids) headless; a clear error if it is not installed."""
    # pygame must not open a window (memory-gym sets this too, but only after pygame.init in some envs)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import memory_gym  # noqa: F401  (registers MysteryPath-v0 etc. with gymnasium)
    except ImportError as e:
        raise ImportError(
            f"Memory Gym environments need the memory-gym package: pip install memory-gym==1.0.2 "
            f"(it pins gymnasium==0.29.0 and pygame==2.4.0). Import failed with: {e}"
        ) from e


def _timeout_rule(base_id: str):
    """(info at the last step) -> True when the episode ended by its time limit, per memory-gym task."""
    if base_id.startswith("MysteryPath"):
        return lambda info: not info["success"]
    if base_id.startswith("SearingSpotlights"):
        return lambda info: not info["success"] and info.get("agent_health", 0.0) > 0.0
    return lambda info: False  # Mortar Mayhem: no time limit


class MemoryGymEpisodeEnd(gym.Wrapper):
    """Boolean `info["success"]` at the last step of every episode; time-limit ends -> truncated.

    Also makes close() safe with several envs in one process: all memory-gym envs draw on pygame's one
    display, and memory-gym's close() calls pygame.quit(), which would kill every other open env's display
    ("pygame.error: display Surface quit"). Only the last open env really closes.
    """

    _open_envs = 0  # memory-gym envs open in this process

    def __init__(self, env, is_timeout):
        super().__init__(env)
        self.is_timeout = is_timeout
        self._closed = False
        MemoryGymEpisodeEnd._open_envs += 1

    def close(self):
        if self._closed:
            return
        self._closed = True
        MemoryGymEpisodeEnd._open_envs -= 1
        if MemoryGymEpisodeEnd._open_envs == 0:
            self.env.close()
        elif getattr(self.env.unwrapped, "debug_window", None) is not None:
            self.env.unwrapped.debug_window.destroy()

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            success = bool(info.get("success", 0))
            info["success"] = success
            if terminated and self.is_timeout(info):
                terminated, truncated = False, True
        return obs, reward, terminated, truncated, info


def make_memory_gym_env(base_id: str, reset_options=None, flatten_actions: bool = False, render_mode=None, **kwargs):
    """One memory-gym env (HWC images; make_envs makes them CHW).

    base_id: memory-gym's id. reset_options: dict passed on every reset (memory-gym "reset parameters", e.g.
    {"max_steps": 256}); for our Easy ids it is merged over the Easy options. flatten_actions: turn
    MultiDiscrete([3, 3]) into Discrete(9).
    """
    if kwargs:
        raise TypeError(
            f"unexpected arguments {sorted(kwargs)}; memory-gym envs accept reset_options (dict of memory-gym reset "
            f"parameters), flatten_actions (bool) and render_mode"
        )
    import_memory_gym()
    if reset_options is not None and not isinstance(reset_options, dict):
        raise TypeError(f"reset_options must be a dict of memory-gym reset parameters, got {reset_options!r}")
    check_type(base_id, "flatten_actions", flatten_actions, bool)
    env = gym.make(base_id, render_mode=render_mode)
    if reset_options:
        # memory-gym asserts on unknown keys only at reset, and takes any type silently; check now for a clear message
        defaults = getattr(env.unwrapped, "default_reset_parameters", None)
        if defaults is not None:
            unknown = sorted(set(reset_options) - set(defaults))
            if unknown:
                raise TypeError(f"unknown reset_options {unknown} for {base_id}; valid keys: {sorted(defaults)}")
            for key, value in reset_options.items():  # each takes the type of its default (lists: of integers)
                check_type(base_id, f"reset_options {key}", value, type(defaults[key]))
                if isinstance(value, list):
                    for item in value:
                        check_type(base_id, f"reset_options {key} entries", item, type(defaults[key][0]))
        env = ResetOptions(env, reset_options)
    env = MemoryGymEpisodeEnd(env, _timeout_rule(base_id))
    if flatten_actions:
        env = FlattenMultiDiscrete(env)
    return env


def make_easy_env(easy_id: str, reset_options=None, **kwargs):
    """Entry point of our Easy ids: the base env with the Easy reset options (user options override them)."""
    base_id, options = EASY_IDS[easy_id]
    return make_memory_gym_env(base_id, reset_options={**options, **(reset_options or {})}, **kwargs)
