"""Observation encoders and action-space checks shared by the scripts.

The encoder turns one observation into a flat feature vector; each script then maps those features to
its model width (`Linear(features -> d_model)` + ReLU, shared/AGALITE.md section 3).
    flat Box (T-Maze, symbolic Craftax): features = the observation itself
    image Box (C, H, W) uint8 (Mystery Path 3x84x84, Memory Maze 3x64x64): a small CNN, scaled to [0, 1] here
"""

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class FlatEncoder(nn.Module):
    def forward(self, x):  # (N, *obs_shape) -> (N, prod(obs_shape)); keeps float64 inputs float64 for tests
        return (x if x.is_floating_point() else x.float()).flatten(1)


class ImageEncoder(nn.Module):
    """Nature-DQN-style CNN for channels-first uint8 images; keeps storage uint8 and scales here."""

    def __init__(self, obs_shape, out_features: int = 256):
        super().__init__()
        c, h, w = obs_shape
        self.cnn = nn.Sequential(
            layer_init(nn.Conv2d(c, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n = self.cnn(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(n, out_features)), nn.ReLU())

    def forward(self, x):  # (N, C, H, W) uint8 -> (N, out_features)
        return self.fc(self.cnn(x.float() / 255.0))


def make_encoder(observation_space):
    """Returns (encoder module, number of features) for an observation space, or a clear error."""
    if isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1:
        return FlatEncoder(), int(observation_space.shape[0])
    if isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 3 and observation_space.dtype == np.uint8:
        if observation_space.shape[0] not in (1, 3, 4):
            raise ValueError(f"image observations must be channels-first (C, H, W) with C in (1, 3, 4), got shape {observation_space.shape}; wrap the env so it transposes HWC to CHW")
        encoder = ImageEncoder(observation_space.shape)
        return encoder, encoder.fc[0].out_features
    raise ValueError(f"unsupported observation space {observation_space}: the scripts handle flat Box vectors and channels-first uint8 image Boxes")


def action_nvec(action_space) -> list:
    """Number of choices of each action component: Discrete(n) -> [n], MultiDiscrete([a, b]) -> [a, b]."""
    if isinstance(action_space, gym.spaces.Discrete):
        return [int(action_space.n)]
    if isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        return [int(n) for n in action_space.nvec]
    raise ValueError(f"unsupported action space {action_space}: the scripts handle Discrete and MultiDiscrete")
