"""Small gymnasium wrappers that make third-party envs fit the scripts' interface.

The scripts expect image observations channels-first (C, H, W) uint8 (envs/encoders.py), and some
environments need fixed reset options (Mystery Path "Easy") or a flat action set.
"""

import gymnasium as gym
import numpy as np


def is_hwc_image(space) -> bool:
    """True for a uint8 Box shaped (H, W, C) with C in (1, 3, 4) that is not already channels-first."""
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] in (1, 3, 4)
        and space.shape[0] not in (1, 3, 4)
    )


class ChannelsFirst(gym.ObservationWrapper):
    """(H, W, C) uint8 image -> (C, H, W) uint8, the layout torch convolutions expect."""

    def __init__(self, env):
        super().__init__(env)
        space = env.observation_space
        if not is_hwc_image(space):
            raise ValueError(f"ChannelsFirst needs a (H, W, C) uint8 Box observation space, got {space}")
        h, w, c = space.shape
        self.observation_space = gym.spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, obs):
        # A contiguous copy: torch.as_tensor / np.stack would otherwise keep a strided view.
        return np.ascontiguousarray(np.transpose(obs, (2, 0, 1)))


class ResetOptions(gym.Wrapper):
    """Passes fixed `options` to every reset, including the vector env's automatic resets (which pass none).

    Options given to reset() explicitly override the fixed ones key by key.
    """

    def __init__(self, env, options: dict):
        super().__init__(env)
        self.options = dict(options)

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options={**self.options, **(options or {})})


class FlattenMultiDiscrete(gym.ActionWrapper):
    """MultiDiscrete(nvec) -> Discrete(prod(nvec)); action a maps to np.unravel_index(a, nvec) (row-major).

    E.g. Mystery Path's MultiDiscrete([3, 3]) becomes Discrete(9) with a = 3 * a0 + a1.
    """

    def __init__(self, env):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete) or space.nvec.ndim != 1:
            raise ValueError(f"flatten_actions needs a 1-d MultiDiscrete action space, got {space}")
        self.nvec = tuple(int(n) for n in space.nvec)
        self.action_space = gym.spaces.Discrete(int(np.prod(self.nvec)))

    def action(self, action):
        return np.array(np.unravel_index(int(action), self.nvec), dtype=np.int64)
