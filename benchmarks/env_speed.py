"""Environment steps per second with random actions, per env family, through envs.make_envs (what the
scripts see: vector env, wrappers, channels-first images, episode statistics; automatic resets included).

    python benchmarks/env_speed.py                       # every family, short runs
    python benchmarks/env_speed.py --env-ids MysteryPath-Grid-v0 --seconds 10
    python benchmarks/env_speed.py --env-ids TMaze-v0 MysteryPath-Grid-v0 --num-envs 8 32 --vector sync async

env steps/s = num_envs * vector steps / wall time, measured after a warm-up (reset, a few steps; for
Craftax the first step, which compiles the batched JAX step, is timed separately as "first step").
Memory Maze renders in software without a GPU: its runs are short on purpose.
"""

import os
import sys
import time
from dataclasses import dataclass, field

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
import envs  # noqa: E402


@dataclass
class Args:
    env_ids: list = field(default_factory=lambda: [
        "TMaze-v0", "MysteryPath-Grid-v0", "MysteryPath-v0", "MortarMayhem-v0", "SearingSpotlights-v0",
        "MemoryMaze-9x9-v0", "Craftax-Classic-Symbolic-v1", "Craftax-Symbolic-v1"])
    """env ids to time"""
    num_envs: list = field(default_factory=lambda: [1, 8])
    """vector sizes for the non-Craftax envs"""
    craftax_num_envs: list = field(default_factory=lambda: [1, 64])
    """vector sizes for Craftax (one batched JAX call per step)"""
    vector: list = field(default_factory=lambda: ["sync"])
    """sync (the envs one after the other in this process) and/or async (worker processes, the scripts' --async-envs)"""
    seconds: float = 3.0
    """time budget per measurement (Memory Maze: at least 8 vector steps; Craftax: at least 20)"""
    seed: int = 0


def measure(env_id: str, num_envs: int, seconds: float, seed: int, async_envs: bool = False) -> dict:
    t0 = time.perf_counter()
    vec = envs.make_envs(env_id, num_envs, seed, async_envs=async_envs)
    vec.reset(seed=seed)
    t_ready = time.perf_counter() - t0
    vec.action_space.seed(seed)
    t0 = time.perf_counter()
    vec.step(vec.action_space.sample())  # Craftax: compiles here
    t_first = time.perf_counter() - t0
    for _ in range(2):  # warm-up
        vec.step(vec.action_space.sample())
    min_steps = 20 if env_id.startswith("Craftax") else (8 if env_id.startswith("MemoryMaze") else 50)
    steps, t0 = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - t0 < seconds:
        vec.step(vec.action_space.sample())
        steps += 1
    elapsed = time.perf_counter() - t0
    vec.close()
    return dict(env_id=env_id, num_envs=num_envs, vector="async" if async_envs else "sync", env_steps_per_s=num_envs * steps / elapsed, make_and_reset_s=t_ready, first_step_s=t_first)


def main(args: Args):
    print(f"# env steps/s with random actions ({os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL', 'auto')})")
    print("| env id | num_envs | vector | env steps/s | make + reset (s) | first step (s) |")
    print("|---|---:|---|---:|---:|---:|")
    for env_id in args.env_ids:
        for n in (args.craftax_num_envs if env_id.startswith("Craftax") else args.num_envs):
            for mode in (["sync"] if env_id.startswith("Craftax") else args.vector):  # Craftax: one batched JAX env
                try:
                    r = measure(env_id, n, args.seconds, args.seed, async_envs=mode == "async")
                except (ImportError, RuntimeError) as e:  # a family whose package or renderer is missing
                    print(f"| {env_id} | {n} | {mode} | skipped: {str(e).splitlines()[0][:120]} | | |")
                    continue
                print(f"| {env_id} | {n} | {mode} | {r['env_steps_per_s']:,.0f} | {r['make_and_reset_s']:.1f} | {r['first_step_s']:.2f} |", flush=True)
    if "MUJOCO_GL" in os.environ:
        print(f"\nMemory Maze rendered with MUJOCO_GL={os.environ['MUJOCO_GL']}")


if __name__ == "__main__":
    main(tyro.cli(Args))
