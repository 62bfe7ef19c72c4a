"""How often does a uniformly random policy reach the T-Maze junction before the 1000-step time limit?

Until the agent has reached the junction at least once, every T-Maze episode looks the same to it (-0.1 per
step, no matter where it walks), so PPO has no signal telling it to walk right. This computes, exactly (a
dynamic program over positions, not a simulation), the chance that the initial, uniform policy (right 1/4,
left 1/4, up/down 1/2 = stay in the corridor) reaches position L-1 within the limit:

    python benchmarks/tmaze_exploration.py --lengths 10 30 60 90 120 160 200

A freshly initialised network is not uniform: it prefers some actions, differently at each position. With
`--scripts`, this also simulates the initial policies of ppo_<script>.py agents (with the release's heads and with
our linear heads, `--heads`), one per init seed (torch.manual_seed(seed) before the Agent is built, as the scripts
do, so seed s is run s's initial network), and reports the share of `--episodes` first episodes that reach the
junction cell within the limit and how far right they get:

    python benchmarks/tmaze_exploration.py --lengths 120 --scripts agalite gtrxl --init-seeds 1 2 3 4 5 6 7 8

Before the first junction, is there any signal to walk right? With a bootstrapped time limit the uniform walk's
value is -0.1 / (1 - gamma) = -10 at every position: none. With the time-out terminal (the release's protocol)
the value of a state is the discounted cost of the steps left, and the further right the walk is, the later in
the episode it got there on average, so the fewer steps are left: the value rises along the corridor and a step
right has a positive advantage, if a small one (about 0.04 a cell at corridor 120; benchmarks/tmaze_ablation.py
found that bootstrapping the time-out does not change which runs reach the junction). `--value-positions` prints that value (exact, the same dynamic program, averaged
over the visits to each position) at a few positions for the first of `--lengths`:

    python benchmarks/tmaze_exploration.py --lengths 120 --value-positions 0 10 20 40 60

What did a run learn before it found the junction? `--run-dirs` takes runs' checkpoints (TMaze-v0, any script) and
prints, for the run's initial network (its seed and arguments, built by the current code: a run started before a
change to the initialisation began from another network) and for the checkpoint: how often its policy
reaches the junction and how far right it gets, and along a walk straight right, the critic's value and the
policy's P(right) - P(left) at `--value-positions` (means over `--episodes` walks):

    python benchmarks/tmaze_exploration.py --run-dirs runs/TMaze-v0__abl_probe_agalite_L120__1__* --value-positions 0 10 20 40 60
"""

import json
import os
import sys
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import envs  # noqa: E402,F401  (registers TMaze-v0)
from envs.tmaze import LEFT, RIGHT  # noqa: E402

# the actor and critic heads (the scripts' --head-hidden, --actor-gain, --critic-gain)
HEADS = {"release": dict(head_hidden=128, actor_gain=1.414, critic_gain=1.414), "linear": dict(head_hidden=0, actor_gain=0.01, critic_gain=1.0)}


@dataclass
class Args:
    lengths: list = field(default_factory=lambda: [10, 30, 60, 90, 120, 160, 200])
    """corridor lengths"""
    max_episode_steps: int = 1000
    """the time limit of an episode"""
    budget: int = 5_000_000
    """environment steps to convert the chance into expected junction visits"""
    gamma: float = 0.99
    """discount of --value-positions"""
    value_positions: list = field(default_factory=list)
    """print the uniform walk's value at these positions, time-outs terminal, for the first of --lengths"""
    scripts: list = field(default_factory=list)
    """also simulate the initial policies of these ppo_<script>.py agents (agalite, gtrxl, lstm, galite)"""
    heads: list = field(default_factory=lambda: ["release", "linear"])
    """head settings of the simulated agents: release (Linear(128) -> tanh -> Linear, gains sqrt 2) or linear (gains 0.01, 1)"""
    init_seeds: list = field(default_factory=lambda: [1, 2, 3, 4])
    """one initial network per seed"""
    episodes: int = 32
    """first episodes simulated per initial network (a batch, one env each)"""
    run_dirs: list = field(default_factory=list)
    """runs (with a checkpoint.pt) whose initial and trained policies to simulate and profile along the corridor"""


def uniform_walk_step(p: np.ndarray) -> np.ndarray:
    """One step of the uniform policy: the distribution over positions after it (the junction cell not cleared)."""
    q = 0.5 * p  # up / down in the corridor: stay
    q[1:] += 0.25 * p[:-1]  # right
    q[:-1] += 0.25 * p[1:]  # left
    q[0] += 0.25 * p[0]  # left at the wall: stay
    return q


def reach_probability(length: int, max_episode_steps: int) -> float:
    p = np.zeros(length)  # probability of being at each position, not yet having reached the junction
    p[0] = 1.0
    reached = 0.0
    for _ in range(max_episode_steps):
        q = uniform_walk_step(p)
        reached += q[-1]
        q[-1] = 0.0
        p = q
    return reached


def timeout_value_by_position(length: int, max_episode_steps: int, gamma: float) -> np.ndarray:
    """V(x) of the uniform walk when the time limit is terminal (no bootstrap): the discounted cost of the steps
    left, -0.1 (1 - gamma^(limit - t)) / (1 - gamma), averaged over the visits to x before the junction."""
    p = np.zeros(length)
    p[0] = 1.0
    visits, value_sum = np.zeros(length), np.zeros(length)
    for t in range(max_episode_steps):
        visits += p
        value_sum += p * -0.1 * (1 - gamma ** (max_episode_steps - t)) / (1 - gamma)
        q = uniform_walk_step(p)
        q[-1] = 0.0  # the junction: the walk stops here (the chance of that is reach_probability)
        p = q
    return value_sum / np.maximum(visits, 1e-300)


def policy_step(agent, obs, state, first):
    """One acting step of a batch of single episodes: (hidden (1, B, H), action probabilities (B, A), new state)."""
    done = torch.full((1, len(obs)), float(first))
    hidden, state = agent.memory(torch.as_tensor(obs, dtype=torch.float32)[None], state, done)
    return hidden, torch.softmax(agent.actor(hidden)[0], dim=-1), state


def simulate_policy(agent, length, max_episode_steps, episodes, seed):
    """The agent's policy, sampled, in `episodes` TMaze-v0 episodes at once until each reaches the junction cell or
    the limit. Returns (reached (episodes,) bool, furthest position (episodes,))."""
    env_list = [gym.make("TMaze-v0", corridor_length=length, max_episode_steps=max_episode_steps).unwrapped for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed * 10_000 + i)[0] for i, env in enumerate(env_list)])
    state = agent.initial_state(episodes, "cpu")
    reached = np.zeros(episodes, bool)
    furthest = np.zeros(episodes, int)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in range(max_episode_steps):
            _, probs, state = policy_step(agent, obs, state, first=t == 0)
            actions = torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()
            for i, env in enumerate(env_list):
                if not reached[i]:
                    obs[i] = env.step(actions[i])[0]
                    furthest[i] = max(furthest[i], env.position)
                    reached[i] = env.position == length - 1
            if reached.all():
                break
    return reached, furthest


def walk_profile(agent, length, positions, episodes, seed):
    """Along `episodes` walks straight right from the start: the critic's value and P(right) - P(left) at each of
    `positions` (position x is reached after x steps), means over the walks. Returns two arrays (len(positions),)."""
    env_list = [gym.make("TMaze-v0", corridor_length=length).unwrapped for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed * 10_000 + i)[0] for i, env in enumerate(env_list)])
    state = agent.initial_state(episodes, "cpu")
    values, drift = [], []
    with torch.no_grad():
        for t in range(max(positions) + 1):
            hidden, probs, state = policy_step(agent, obs, state, first=t == 0)
            values.append(agent.critic(hidden)[0, :, 0].mean().item())
            drift.append((probs[:, RIGHT] - probs[:, LEFT]).mean().item())
            obs = np.stack([env.step(RIGHT)[0] for env in env_list])
    return np.array(values)[list(positions)], np.array(drift)[list(positions)]


def run_rows(args):
    """Per run: a row for its initial network and one for its checkpoint."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import memory_reach  # benchmarks/memory_reach.py: loads a run's checkpoint with its own arguments

    positions = [int(x) for x in args.value_positions] or [0]
    rows = []
    for run_dir in args.run_dirs:
        checkpoint, run_args = memory_reach.load_run(run_dir)
        module = memory_reach.script_module(checkpoint)
        length = int(json.loads(run_args.env_kwargs or "{}").get("corridor_length", 10))  # TMaze-v0's default: 10
        env = gym.make("TMaze-v0", corridor_length=length)
        torch.manual_seed(run_args.seed)
        agent = module.Agent(env.observation_space, env.action_space, run_args)
        for when in ("init", f"{checkpoint['global_step']:,}"):
            if when != "init":
                agent.load_state_dict(checkpoint["model"])
            reached, far = simulate_policy(agent, length, args.max_episode_steps, args.episodes, run_args.seed)
            value, drift = walk_profile(agent, length, positions, args.episodes, run_args.seed)
            rows.append(f"| {run_args.exp_name} seed {run_args.seed} | {when} | {reached.mean():.2f} | {far.mean() / (length - 1):.2f} | "
                        + " ".join(f"{v:.2f}" for v in value) + " | " + " ".join(f"{d:+.2f}" for d in drift) + " |")
    return positions, rows


def initial_policy_rows(args):
    import importlib

    rows = []
    for script in args.scripts:
        module = importlib.import_module(f"ppo_{script}")
        for heads in args.heads:
            for length in args.lengths:
                env = gym.make("TMaze-v0", corridor_length=int(length))
                shares, furthest = [], []
                for seed in args.init_seeds:
                    torch.manual_seed(seed)
                    agent = module.Agent(env.observation_space, env.action_space, module.Args(**HEADS[heads]))
                    reached, far = simulate_policy(agent, int(length), args.max_episode_steps, args.episodes, seed)
                    shares.append(reached.mean())
                    furthest.append(far.mean() / (int(length) - 1))
                per_seed = " ".join(f"{x:.2f}" for x in shares)
                rows.append(f"| {script} | {heads} | {length} | {np.mean(shares):.3f} | {per_seed} | {np.mean(furthest):.2f} |")
    return rows


if __name__ == "__main__":
    args = tyro.cli(Args)
    print(f"| corridor length | P(junction within {args.max_episode_steps} steps) | expected visits in {args.budget:.0e} steps of timed-out episodes |")
    print("|---|---|---|")
    for length in args.lengths:
        p = reach_probability(int(length), args.max_episode_steps)
        print(f"| {length} | {p:.3g} | {p * args.budget / args.max_episode_steps:.3g} |")
    if args.value_positions:
        length = int(args.lengths[0])
        value = timeout_value_by_position(length, args.max_episode_steps, args.gamma)
        print(f"\nuniform walk, corridor {length}, value by position with the time-out terminal (bootstrapped: "
              f"{-0.1 / (1 - args.gamma):.2f} everywhere):\n")
        print("| position | " + " | ".join(str(x) for x in args.value_positions) + " |")
        print("|---|" + "---|" * len(args.value_positions))
        print("| value | " + " | ".join(f"{value[int(x)]:.2f}" for x in args.value_positions) + " |")
    if args.scripts:
        torch.set_num_threads(1)
        print(f"\ninitial policies, {args.episodes} episodes per initial network (init seeds {' '.join(map(str, args.init_seeds))}):\n")
        print(f"| script | heads | corridor length | P(junction within {args.max_episode_steps} steps) | per init seed | furthest position / (L - 1), mean |")
        print("|---|---|---|---|---|---|")
        for row in initial_policy_rows(args):
            print(row, flush=True)
    if args.run_dirs:
        torch.set_num_threads(1)
        positions, rows = run_rows(args)
        at = " ".join(map(str, positions))
        print(f"\nruns' policies, initial and trained, {args.episodes} episodes each (values and drifts at positions {at}):\n")
        print(f"| run | step | P(junction within {args.max_episode_steps} steps) | furthest position / (L - 1) | value along a walk right | P(right) - P(left) |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(row, flush=True)
