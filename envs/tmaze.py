"""T-Maze exactly as the AGaLiTe paper ran it (shared/AGALITE.md section 6), and the passive T-Maze
(TMazePassive-v0, below) that separates remembering from exploring.

The agent starts at position 0 of a corridor of length `corridor_length` and must remember a cue that is
shown on the first step only. At the junction (position L-1) it turns up or down: +4 for the turn the cue
asked for, -1 for the other; every other step costs -0.1. The rest of the observation is an 8-bit Gray code
of the current position and `n_distractors` random bits (zeros on the first step), so the cue is the only
thing the agent has to remember.

Observation (float32, size 2 + 8 + n_distractors):
    [cue (2) | gray(position) (8) | distractors (n_distractors)]
    cue: up = [0, 1], down = [1, 0] on the first step, [0, 0] afterwards.
Actions: 0 up, 1 down, 2 left, 3 right.

TMazePassive-v0 (Ni et al., NeurIPS 2023, "When do transformers shine in RL?"): the same corridor, actions,
cue, distractors and position code, but walking is trivially rewarded and only remembering is hard. The
junction lies `corridor_length` = L moves right of the start (position L), and every episode lasts exactly
L + 1 steps: L moves, then one decision, so the cue must be held for L steps. A step that is not a move right
costs -1/L (in the corridor: left, up, down; at the junction: left or right); at the junction up or down ends
the episode with +1 for the cued turn and 0 for the other. An agent that wasted a step is still in the corridor
after L + 1 steps: the episode ends there with success False, reported as terminated (the horizon is part of the
task, not a time limit). The optimal return is 1.0. The position code has max(8, ceil(log2(L + 1))) bits, so
that positions 0 .. L stay distinct for L > 255 (observation size 2 + bits + n_distractors).

`carried=True`: the corridor moves the agent one cell right on each of the first L steps whatever it does (reward
0), and only the action at the junction counts (up or down as above; left or right: out of time, -1/L, success
False). Why: PPO on the walking version learns to walk from the -1/L signal long before it has turned at the
junction, its policy becomes deterministic ("right" everywhere, the junction included), and it never samples a turn
again: it ends every episode at the junction with return -1/L and success 0 (docs/tmaze_passive.md). Carried,
nothing but the turn is learned, so success measures the memory alone: 0.5 without it, 1.0 with it.
"""
import math

import gymnasium as gym
import numpy as np

from envs.checks import check_type

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
POSITION_BITS = 8


def gray_code(n: int, bits: int = POSITION_BITS) -> np.ndarray:
    """Binary-reflected Gray code of n, most significant bit first, as a float32 vector of `bits` entries."""
    g = n ^ (n >> 1)
    return np.array([(g >> (bits - 1 - i)) & 1 for i in range(bits)], dtype=np.float32)


class TMazeEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, corridor_length: int = 10, n_distractors: int = 6, max_episode_steps: int = 1000, render_mode=None):
        for key, value in [("corridor_length", corridor_length), ("n_distractors", n_distractors), ("max_episode_steps", max_episode_steps)]:
            check_type("TMaze-v0", key, value, int)
        if not 1 <= corridor_length <= 2**POSITION_BITS:
            raise ValueError(
                f"TMaze-v0: corridor_length={corridor_length} cannot be represented by the {POSITION_BITS}-bit "
                f"position code; choose 1 <= corridor_length <= {2**POSITION_BITS}."
            )
        if n_distractors < 0:
            raise ValueError(f"TMaze-v0: n_distractors must be >= 0, got {n_distractors}.")
        if max_episode_steps < 1:
            raise ValueError(f"TMaze-v0: max_episode_steps must be >= 1, got {max_episode_steps}.")
        self.corridor_length = corridor_length
        self.n_distractors = n_distractors
        self.max_episode_steps = max_episode_steps
        self.position_bits = POSITION_BITS
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2 + POSITION_BITS + n_distractors,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.render_mode = render_mode

    def _obs(self, first: bool) -> np.ndarray:
        cue = np.zeros(2, np.float32)
        distractors = np.zeros(self.n_distractors, np.float32)
        if first:
            cue[1 if self.goal_up else 0] = 1.0  # up = [0, 1], down = [1, 0]
        else:
            distractors = self.np_random.integers(0, 2, self.n_distractors).astype(np.float32)
        return np.concatenate([cue, gray_code(self.position, self.position_bits), distractors])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.goal_up = bool(self.np_random.integers(0, 2))
        self.position = 0
        self.t = 0
        return self._obs(first=True), {}

    def step(self, action):
        action = int(action)
        self.t += 1
        reward, terminated, info = -0.1, False, {}
        at_junction = self.position == self.corridor_length - 1
        if action == LEFT:
            self.position = max(self.position - 1, 0)
        elif action == RIGHT:
            self.position = min(self.position + 1, self.corridor_length - 1)
        elif at_junction:  # up or down at the junction ends the episode
            terminated = True
            success = (action == UP) == self.goal_up
            reward = 4.0 if success else -1.0
            info["success"] = success
        truncated = not terminated and self.t >= self.max_episode_steps
        if truncated:
            info["success"] = False
        return self._obs(first=False), reward, terminated, truncated, info

    @property
    def n_cells(self):
        return self.corridor_length  # positions 0 .. L - 1, the junction at L - 1

    def render(self):
        """A 3-row picture of the maze for videos: corridor in the middle row, the two arms at the junction
        (the rewarded one green), the agent red; 8 pixels a cell."""
        if self.render_mode != "rgb_array":
            return None
        cells = np.zeros((3, self.n_cells, 3), np.uint8)
        cells[1, :] = 200  # corridor
        goal_row, wrong_row = (0, 2) if self.goal_up else (2, 0)
        cells[goal_row, -1], cells[wrong_row, -1] = (0, 200, 0), (120, 120, 120)
        cells[1, self.position] = (220, 0, 0)
        return np.kron(cells, np.ones((8, 8, 1), np.uint8))


class TMazePassiveEnv(TMazeEnv):
    """The passive T-Maze (module docstring): junction at position L, a fixed horizon of L + 1 steps."""

    def __init__(self, corridor_length: int = 100, n_distractors: int = 6, carried: bool = False, render_mode=None):
        for key, value, expected in [("corridor_length", corridor_length, int), ("n_distractors", n_distractors, int), ("carried", carried, bool)]:
            check_type("TMazePassive-v0", key, value, expected)
        if corridor_length < 1:
            raise ValueError(f"TMazePassive-v0: corridor_length must be >= 1, got {corridor_length}.")
        if n_distractors < 0:
            raise ValueError(f"TMazePassive-v0: n_distractors must be >= 0, got {n_distractors}.")
        self.corridor_length = corridor_length
        self.n_distractors = n_distractors
        self.max_episode_steps = corridor_length + 1  # the task's horizon, not a time limit
        self.position_bits = max(POSITION_BITS, math.ceil(math.log2(corridor_length + 1)))
        self.carried = carried
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2 + self.position_bits + n_distractors,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.render_mode = render_mode

    def step(self, action):
        action = int(action)
        self.t += 1
        L = self.corridor_length
        if self.carried and self.position < L:  # the corridor moves the agent: no action counts before the junction
            self.position += 1
            return self._obs(first=False), 0.0, False, False, {}
        reward, terminated, info = -1.0 / L, False, {}
        if self.position == L and action in (UP, DOWN):  # the decision
            terminated = True
            success = (action == UP) == self.goal_up
            reward = 1.0 if success else 0.0
            info["success"] = success
        elif action == RIGHT and self.position < L:
            self.position += 1
            reward = 0.0
        elif action == LEFT:
            self.position = max(self.position - 1, 0)
        if not terminated and self.t >= self.max_episode_steps:  # out of time before deciding: part of the task
            terminated = True
            info["success"] = False
        return self._obs(first=False), reward, terminated, False, info

    @property
    def n_cells(self):
        return self.corridor_length + 1  # positions 0 .. L, the junction at L
