"""Craftax (craftax 1.6.1, Matthews et al. 2024) symbolic envs as one batched vector env stepped in JAX.

    ids: Craftax-Symbolic-v1 (obs 8268 floats, 43 actions), Craftax-Classic-Symbolic-v1 (obs 1345, 17 actions)

Craftax is written in JAX: stepping N worlds one at a time from Python would spend all the time in
dispatch, so `CraftaxVecEnv` steps all `num_envs` worlds in ONE jitted call (`jax.vmap` of the
single-world step) and hands numpy arrays to the scripts. It follows the gymnasium 0.29 vector-env
interface the scripts use (reset(seed=) / step -> obs, rewards, terminations, truncations, infos with
`final_info` / `final_observation` for the envs whose episode just ended).

Optimistic auto-reset: generating a Craftax world is far more work than a step (Craftax generates every
floor of the dungeon), and the stock auto-reset generates a fresh world for every env on every step only
to throw almost all of them away. Here a pool of `reset_pool_size` freshly generated (obs, state) pairs is
kept ready; on a step where some envs finish, the k-th finished env (in index order) takes pool entry
k mod pool_size and the pool is then regenerated. On steps where no env finishes nothing is generated
(a top-level `lax.cond`, which XLA runs as a real branch). If more envs finish in one step than the pool
holds, some of them start from the same world (that is the "optimistic" part; their trajectories diverge
with the actions). Default pool size: min(num_envs, max(4, num_envs // 16)).

Episode statistics are kept on the JAX side and delivered like gymnasium's RecordEpisodeStatistics:
`infos["final_info"][i] = {"episode": {"r": array([return]), "l": array([length]), "t": array([seconds])},
"achievements": share of the game's achievements unlocked in the episode, in [0, 1], "achievement_flags": uint8
array (n_achievements,), 1 for each achievement unlocked in the episode}`, in the order of
`achievement_names(env_id)` (the game's Achievement enum: 22 in Classic, 67 in the full game).
Episodes that hit the time limit (`max_episode_steps`, Craftax's `max_timesteps`: 10000 Classic,
100000 full) without dying are reported as truncated; death (or lava, or beating the final boss) terminates.

JAX is imported only when an env is made, so `import envs` stays fast and works without JAX installed.
The first step compiles the vmapped step (about 15 s Classic, 50 s full Craftax on 2 CPU cores).
"""

import functools
import os
import time

import gymnasium as gym
import numpy as np

from envs.checks import check_type

ENV_IDS = ["Craftax-Symbolic-v1", "Craftax-Classic-Symbolic-v1"]

# JAX reserves 75% of a GPU's memory when it first uses it, and torch, which trains on the same GPU, then runs
# out of memory. Set before JAX is imported (here, at `import envs`), unless the user chose otherwise: JAX then
# allocates what it needs, as torch does. (If JAX was imported before `import envs`, set it yourself.)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _import_craftax():
    try:
        import jax
        from craftax.craftax_env import make_craftax_env_from_name
    except ImportError as e:
        raise ImportError(f"Craftax envs need: pip install craftax==1.6.1 (it brings jax; the CPU build is enough). Import failed with: {e}") from e
    return jax, make_craftax_env_from_name


@functools.lru_cache(maxsize=None)
def achievement_names(env_id):
    """The game's achievements in the order of its state's `achievements` array (and of `achievement_flags`),
    lower case: ('collect_wood', 'place_table', ...), 22 for Craftax-Classic, 67 for the full game."""
    if env_id not in ENV_IDS:
        raise ValueError(f"unknown Craftax id {env_id!r}; choose one of {ENV_IDS}")
    _import_craftax()  # the same message as making an env when craftax is missing
    if "Classic" in env_id:
        from craftax.craftax_classic.constants import Achievement
    else:
        from craftax.craftax.constants import Achievement
    return tuple(a.name.lower() for a in sorted(Achievement, key=lambda a: a.value))  # value = index in the array


class CraftaxVecEnv(gym.vector.VectorEnv):
    def __init__(self, env_id: str, num_envs: int, reset_pool_size: int = None, max_episode_steps: int = None):
        if env_id not in ENV_IDS:
            raise ValueError(f"unknown Craftax id {env_id!r}; choose one of {ENV_IDS}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        for key, value in [("reset_pool_size", reset_pool_size), ("max_episode_steps", max_episode_steps)]:
            if value is not None:
                check_type(env_id, key, value, int)
        if reset_pool_size is None:
            reset_pool_size = min(num_envs, max(4, num_envs // 16))  # 1 -> 1, 64 -> 4, 1024 -> 64
        if reset_pool_size < 1:
            raise ValueError(f"reset_pool_size must be >= 1, got {reset_pool_size}")
        jax, make_craftax_env_from_name = _import_craftax()
        self.env_id = env_id
        self._jax = jax
        self._env = make_craftax_env_from_name(env_id, auto_reset=False)
        params = self._env.default_params
        if max_episode_steps is not None:
            if max_episode_steps < 1:
                raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
            params = params.replace(max_timesteps=int(max_episode_steps))
        self.params = params
        self.reset_pool_size = int(reset_pool_size)
        obs_dim = int(self._env.observation_space(params).shape[0])
        n_actions = int(self._env.action_space(params).n)
        super().__init__(num_envs, gym.spaces.Box(0.0, 1.0, (obs_dim,), np.float32), gym.spaces.Discrete(n_actions))
        self._reset_fn = jax.jit(self._build_reset())
        self._step_fn = jax.jit(self._build_step())
        self._carry = None

    # ---- JAX side -------------------------------------------------------------------------------
    def _strong(self):
        # astype() drops JAX's "weak type" flag, so reset and step hand back identically typed carries
        return lambda tree: self._jax.tree.map(lambda x: x.astype(x.dtype), tree)

    def _build_reset(self):
        jax, env, params, n, pool = self._jax, self._env, self.params, self.num_envs, self.reset_pool_size
        jnp = jax.numpy
        reset_many = jax.vmap(env.reset_env, in_axes=(0, None))
        strong = self._strong()

        def reset(key):
            key, k_worlds = jax.random.split(key)
            # One vmapped world generation for the n envs and the pool (compiling it twice costs seconds).
            all_obs, all_states = reset_many(jax.random.split(k_worlds, n + pool), params)  # obs (n + pool, obs_dim)
            obs, states = all_obs[:n], jax.tree.map(lambda x: x[:n], all_states)
            pool_obs, pool_states = all_obs[n:], jax.tree.map(lambda x: x[n:], all_states)
            zeros = jnp.zeros(n, jnp.float32)
            carry = dict(states=states, pool_obs=pool_obs, pool_states=pool_states, ep_return=zeros, ep_length=jnp.zeros(n, jnp.int32), key=key)
            return strong(carry), obs

        return reset

    def _build_step(self):
        jax, env, params, n, pool = self._jax, self._env, self.params, self.num_envs, self.reset_pool_size
        jnp = jax.numpy
        # Same game without the time limit: tells a real terminal state from a truncation.
        no_limit = params.replace(max_timesteps=np.iinfo(np.int32).max)
        step_many = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
        reset_many = jax.vmap(env.reset_env, in_axes=(0, None))
        is_terminal_many = jax.vmap(env.is_terminal, in_axes=(0, None))

        def select(done, new, old):  # per env: new where done, old elsewhere, for any leaf shape (n, ...)
            return jax.tree.map(lambda a, b: jnp.where(done.reshape((n,) + (1,) * (a.ndim - 1)), a, b), new, old)

        def step(carry, actions):
            key, k_step, k_pool = jax.random.split(carry["key"], 3)
            obs, states, reward, done, _ = step_many(jax.random.split(k_step, n), carry["states"], actions, params)
            terminated = done & is_terminal_many(states, no_limit)
            truncated = done & ~terminated
            ep_return = carry["ep_return"] + reward
            ep_length = carry["ep_length"] + 1
            achievements = states.achievements.mean(axis=1, dtype=jnp.float32)  # (n,) share unlocked so far
            achievement_flags = states.achievements.astype(jnp.uint8)  # (n, n_achievements) which ones

            # Optimistic reset: finished env k (counting finished envs in index order) takes pool entry k mod pool.
            slot = (jnp.cumsum(done) - 1) % pool
            pool_obs = jax.tree.map(lambda x: x[slot], carry["pool_obs"])
            pool_states = jax.tree.map(lambda x: x[slot], carry["pool_states"])
            next_obs = select(done, pool_obs, obs)
            next_states = select(done, pool_states, states)
            # Regenerate the pool only on steps that drew from it.
            new_pool_obs, new_pool_states = jax.lax.cond(
                done.any(),
                lambda: reset_many(jax.random.split(k_pool, pool), params),
                lambda: (carry["pool_obs"], carry["pool_states"]),
            )
            new_carry = dict(
                states=next_states, pool_obs=new_pool_obs, pool_states=new_pool_states,
                ep_return=jnp.where(done, 0.0, ep_return), ep_length=jnp.where(done, 0, ep_length), key=key,
            )
            out = dict(obs=next_obs, reward=reward, terminated=terminated, truncated=truncated, final_obs=obs,
                       ep_return=ep_return, ep_length=ep_length, achievements=achievements,
                       achievement_flags=achievement_flags)
            # Same dtypes in and out (no weak types), or the next call would compile the step again.
            new_carry = jax.tree.map(lambda new, old: new.astype(old.dtype), new_carry, carry)
            return new_carry, out

        return step

    # ---- gymnasium side -------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        if not isinstance(seed, (int, np.integer)):
            raise ValueError(f"Craftax vector env takes one integer seed for all its envs, got {seed!r}")
        self._carry, obs = self._reset_fn(self._jax.random.PRNGKey(int(seed)))
        self._episode_start = np.full(self.num_envs, time.perf_counter())
        return np.array(obs), {}  # np.array copies: torch.as_tensor would warn on a read-only JAX buffer

    def step(self, actions):
        if self._carry is None:
            raise RuntimeError("Craftax vector env: call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"Craftax vector env expects actions of shape ({self.num_envs},), got {actions.shape}")
        self._carry, out = self._step_fn(self._carry, self._jax.numpy.asarray(actions, dtype=np.int32))
        # one device->host copy per array; the pre-reset observations and achievement flags only on steps where an
        # episode ended
        final_obs, flags = out.pop("final_obs"), out.pop("achievement_flags")
        out = {k: np.array(v) for k, v in out.items()}
        terminated, truncated = out["terminated"], out["truncated"]
        done = terminated | truncated
        infos = {}
        if done.any():
            now = time.perf_counter()
            final_obs, flags = np.array(final_obs), np.array(flags)
            final_info = np.full(self.num_envs, None, dtype=object)
            final_observation = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_info[i] = {
                    "episode": {
                        "r": np.array([out["ep_return"][i]], np.float32),
                        "l": np.array([out["ep_length"][i]], np.int32),
                        "t": np.array([round(now - self._episode_start[i], 6)], np.float32),
                    },
                    "achievements": float(out["achievements"][i]),
                    "achievement_flags": flags[i],  # (n_achievements,) uint8, 0/1
                }
                final_observation[i] = final_obs[i]
                self._episode_start[i] = now
            infos = {"final_observation": final_observation, "_final_observation": done.copy(),
                     "final_info": final_info, "_final_info": done.copy()}
        return out["obs"], out["reward"].astype(np.float32), terminated, truncated, infos

    def close_extras(self, **kwargs):
        self._carry = None
