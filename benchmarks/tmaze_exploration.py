"""How often does a uniformly random policy reach the T-Maze junction before the 1000-step time limit?

Until the agent has reached the junction at least once, every T-Maze episode looks the same to it (-0.1 per
step, no matter where it walks), so PPO has no signal telling it to walk right. This computes, exactly (a
dynamic program over positions, not a simulation), the chance that the initial, uniform policy (right 1/4,
left 1/4, up/down 1/2 = stay in the corridor) reaches position L-1 within the limit:

    python benchmarks/tmaze_exploration.py --lengths 10 30 60 90 120 160 200
"""

from dataclasses import dataclass, field

import numpy as np
import tyro


@dataclass
class Args:
    lengths: list = field(default_factory=lambda: [10, 30, 60, 90, 120, 160, 200])
    """corridor lengths"""
    max_episode_steps: int = 1000
    """the time limit of an episode"""
    budget: int = 5_000_000
    """environment steps to convert the chance into expected junction visits"""


def reach_probability(length: int, max_episode_steps: int) -> float:
    p = np.zeros(length)  # probability of being at each position, not yet having reached the junction
    p[0] = 1.0
    reached = 0.0
    for _ in range(max_episode_steps):
        q = 0.5 * p  # up / down in the corridor: stay
        q[1:] += 0.25 * p[:-1]  # right
        q[:-1] += 0.25 * p[1:]  # left
        q[0] += 0.25 * p[0]  # left at the wall: stay
        reached += q[-1]
        q[-1] = 0.0
        p = q
    return reached


if __name__ == "__main__":
    args = tyro.cli(Args)
    print(f"| corridor length | P(junction within {args.max_episode_steps} steps) | expected visits in {args.budget:.0e} steps of timed-out episodes |")
    print("|---|---|---|")
    for length in args.lengths:
        p = reach_probability(int(length), args.max_episode_steps)
        print(f"| {length} | {p:.3g} | {p * args.budget / args.max_episode_steps:.3g} |")
