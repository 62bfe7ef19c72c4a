"""The chance level of a task: return, success and episode length of uniformly random actions, through
envs.make_envs (the vector env, wrappers and episode statistics the scripts see). A learning curve is read against it.

    python benchmarks/random_policy.py --env-id MysteryPath-Grid-Easy-v0 --episodes 400
    python benchmarks/random_policy.py --env-id TMaze-v0 --env-kwargs '{"corridor_length": 60}'

Prints one markdown row: env id, episodes, mean return, success rate (where the env reports success), mean length.
"""

import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
import envs  # noqa: E402


@dataclass
class Args:
    env_id: str = "MysteryPath-Grid-Easy-v0"
    """the environment id"""
    env_kwargs: str = "{}"
    """JSON options of the environment, as the scripts' --env-kwargs"""
    episodes: int = 400
    """episodes to average over (the first ones to end)"""
    num_envs: int = 8
    """environments stepped side by side"""
    seed: int = 0


def random_policy(env_id: str, episodes: int, num_envs: int = 8, seed: int = 0, env_kwargs: str = "{}") -> dict:
    """Steps `num_envs` envs with uniformly random actions until `episodes` episodes have ended."""
    if episodes < 1 or num_envs < 1:
        raise ValueError(f"--episodes ({episodes}) and --num-envs ({num_envs}) must be positive")
    vec = envs.make_envs(env_id, num_envs, seed, env_kwargs)
    vec.reset(seed=seed)
    vec.action_space.seed(seed)
    returns, lengths, successes = [], [], []
    while len(returns) < episodes:
        _, _, _, _, infos = vec.step(vec.action_space.sample())
        for info in infos.get("final_info", []):
            if info and "episode" in info:
                returns.append(float(info["episode"]["r"][0]))
                lengths.append(float(info["episode"]["l"][0]))
                if "success" in info:
                    successes.append(float(info["success"]))
    vec.close()
    returns, lengths = returns[:episodes], lengths[:episodes]
    return dict(env_id=env_id, env_kwargs=env_kwargs, episodes=len(returns), episodic_return=float(np.mean(returns)),
                success_rate=float(np.mean(successes[:episodes])) if successes else None,
                episodic_length=float(np.mean(lengths)))


def main(args: Args):
    try:
        r = random_policy(args.env_id, args.episodes, args.num_envs, args.seed, args.env_kwargs)
    except ValueError as e:  # an unknown env id, bad --env-kwargs, a count out of range: one line, no traceback
        sys.exit(f"error: {e}")
    kwargs = "" if json.loads(args.env_kwargs or "{}") == {} else f" `{args.env_kwargs}`"
    success = "" if r["success_rate"] is None else f"{r['success_rate']:.3f}"
    print("| env id | episodes | return | success | length |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {r['env_id']}{kwargs} | {r['episodes']} | {r['episodic_return']:.3f} | {success} | {r['episodic_length']:.1f} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
