"""Memory Maze (memory-maze 1.0.3, Pasukonis et al. 2022) as gymnasium envs of our own.

memory-maze ships a gym (not gymnasium) wrapper that breaks under numpy 2, so this wraps its dm_env tasks
(`memory_maze.tasks.memory_maze_9x9(...)` etc.) directly:
    ids: MemoryMaze-9x9-v0, MemoryMaze-11x11-v0, MemoryMaze-13x13-v0, MemoryMaze-15x15-v0
    observation: (64, 64, 3) uint8 first-person image, target colour drawn as a border (make_envs makes
                 it (3, 64, 64)); action: Discrete(6) = noop, forward, left, right, forward+left,
                 forward+right; reward +1 per target reached; episodes end only by the time limit
                 (1000 / 2000 / 3000 / 4000 steps at 4 Hz), reported as `truncated`. No success flag:
                 the task has no goal state, only a count of targets reached (the return).

Rendering is MuJoCo offscreen OpenGL. `MUJOCO_GL` chooses the backend (egl, osmesa, glfw) when set;
otherwise this module picks EGL if it renders on a GPU, else OSMesa (Mesa's software renderer, Debian
package libosmesa6), else EGL in software (Mesa's llvmpipe via libegl1 libegl-mesa0 libgl1-mesa-dri),
probed once per process in a subprocess (a failed OpenGL start cannot be undone inside this one). If none
works, the error names the packages to install. Without a GPU expect about 100 env steps/s per process
(software rendering; 2-core machine, after the target-check fix below): Memory Maze training is GPU work.
"""

import contextlib
import importlib.util
import io
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np

from envs.checks import check_type

SIZES = (9, 11, 13, 15)
ENV_IDS = [f"MemoryMaze-{n}x{n}-v0" for n in SIZES]
# the keyword arguments of memory-maze 1.0.3's tasks that --env-kwargs may set, and their types
TASK_KWARGS = {"max_rooms": int, "room_min_size": int, "room_max_size": int, "control_freq": float, "camera_resolution": int,
               "good_visibility": bool, "show_path": bool, "top_camera": bool, "target_color_in_image": bool,
               "global_observables": bool, "randomize_colors": bool}
# Debian/Ubuntu packages that provide each backend's system library
GL_PACKAGES = {"egl": "libegl1 libegl-mesa0 libgl1-mesa-dri", "osmesa": "libosmesa6", "glfw": "libglfw3 and a display"}
# Opens a 16x16 offscreen context with dm_control (what Memory Maze renders with) and prints GL_RENDERER.
_PROBE = (
    "from dm_control import _render\n"
    "ctx = _render.Renderer(16, 16)\n"
    "with ctx.make_current() as c:\n"
    "    print(c.call(lambda: __import__('OpenGL.GL', fromlist=['GL']).glGetString(0x1F01)).decode())\n"  # GL_RENDERER
    "ctx.free()\n"
)
_SOFTWARE = ("llvmpipe", "softpipe", "swrast", "software")
_backend = None  # chosen once per process
renderer_name = None  # GL_RENDERER of the chosen backend when this module chose it, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"


def _probe(backend: str):
    """(ok, detail): whether dm_control can open an OpenGL context with this backend; detail is the
    GL_RENDERER string when it can, the last line of the error when it cannot."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    if r.returncode == 0:
        return True, r.stdout.strip()
    lines = r.stderr.strip().splitlines()
    return False, (lines[-1] if lines else f"exit code {r.returncode}")


def choose_mujoco_gl() -> str:
    """Sets MUJOCO_GL (and PYOPENGL_PLATFORM) for this process before dm_control is imported; returns the backend.

    Order when MUJOCO_GL is not set: EGL on a GPU, else OSMesa, else EGL in software (Mesa's llvmpipe).
    Both software paths use the same rasterizer (about the same speed on this project's 2-core machine).
    """
    global _backend, renderer_name
    if _backend is not None:
        return _backend
    if "dm_control._render" in sys.modules:  # already decided by an earlier import in this process
        _backend = sys.modules["dm_control._render"].BACKEND
        return _backend
    if os.environ.get("MUJOCO_GL"):
        backend = os.environ["MUJOCO_GL"].lower()
    else:
        egl_ok, egl_detail = _probe("egl")
        if egl_ok and not any(w in egl_detail.lower() for w in _SOFTWARE):
            backend, renderer_name = "egl", egl_detail
        else:
            osmesa_ok, osmesa_detail = _probe("osmesa")
            if osmesa_ok:
                backend, renderer_name = "osmesa", osmesa_detail
            elif egl_ok:
                backend, renderer_name = "egl", egl_detail
            else:
                raise RuntimeError(
                    "Memory Maze cannot render: no OpenGL backend could start. "
                    f"EGL failed ({egl_detail}); OSMesa failed ({osmesa_detail}). "
                    f"Install Mesa's software renderer: apt-get install {GL_PACKAGES['osmesa']} "
                    f"(or EGL: apt-get install {GL_PACKAGES['egl']}), or set MUJOCO_GL."
                )
        os.environ["MUJOCO_GL"] = backend
        os.environ["PYOPENGL_PLATFORM"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    _backend = backend
    return backend


def _render_error(backend, e) -> str:
    return (
        f"Memory Maze could not start rendering with MUJOCO_GL={backend}: {type(e).__name__}: {e}. "
        f"That backend needs its system OpenGL library (Debian: apt-get install {GL_PACKAGES.get(backend, GL_PACKAGES['osmesa'])}); "
        f"without a GPU use MUJOCO_GL=osmesa (apt-get install {GL_PACKAGES['osmesa']}) or Mesa EGL (apt-get install {GL_PACKAGES['egl']})."
    )


_original_update_activation = None  # dm_control's TargetSphere._update_activation, kept for the tests


def _vectorised_update_activation(self, physics):
    """dm_control's TargetSphere._update_activation with its Python loop over MuJoCo's contacts done on the
    contact arrays at once: the same test (is this target's geom in a contact, with one of the specific geoms if
    any are given), the same effect (activated, and the sphere made transparent)."""
    if self._activated:
        return
    contact = physics.data.contact
    geom1, geom2 = np.asarray(contact.geom1), np.asarray(contact.geom2)
    touching = (geom1 == self._geom_id) | (geom2 == self._geom_id)
    if self._specific_collision_geom_ids:
        specific = list(self._specific_collision_geom_ids)
        touching &= np.isin(geom1, specific) | np.isin(geom2, specific)
    if touching.any():
        self._activated = True
        physics.bind(self._material).rgba[-1] = 0


def _speed_up_target_spheres():
    """Memory Maze's targets are dm_control TargetSpheres, which check after every physics substep (50 per agent
    step, for each of the 3-6 targets) whether the ball touches them by looping over the contacts in Python: 63%
    of a 9x9 step's time on a CPU (docs/environments.md, Speeds). We replace that method by its vectorised form."""
    global _original_update_activation
    from dm_control.locomotion.props import target_sphere

    if _original_update_activation is None:
        _original_update_activation = target_sphere.TargetSphere._update_activation
        target_sphere.TargetSphere._update_activation = _vectorised_update_activation


def import_memory_maze_tasks():
    missing = [m for m in ("memory_maze", "dm_control", "mujoco", "gym") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"Memory Maze needs the Python packages {missing}: pip install memory-maze==1.0.3 dm-control 'mujoco<4' gym "
            "(memory_maze's __init__ imports the old gym package even though this project does not use it)"
        )
    backend = choose_mujoco_gl()
    try:
        # memory_maze/__init__ imports the old `gym` just to register its gym ids, and gym prints an
        # "unmaintained" notice to stderr on import; we never use gym, so keep that notice quiet.
        with contextlib.redirect_stderr(io.StringIO()):
            from memory_maze import tasks
    except Exception as e:  # packages are there (checked above): OpenGL failed to load at import
        raise RuntimeError(_render_error(backend, e)) from e
    _speed_up_target_spheres()
    return tasks


class MemoryMazeEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, size: int = 9, render_mode=None, **task_kwargs):
        """size: maze size (9, 11, 13 or 15). task_kwargs go to memory_maze.tasks.memory_maze_NxN (e.g.
        good_visibility=True, camera_resolution=64); image_only_obs and discrete_actions are fixed here."""
        if size not in SIZES:
            raise ValueError(f"Memory Maze size must be one of {SIZES}, got {size}")
        fixed = {"image_only_obs", "discrete_actions", "seed"} & set(task_kwargs)
        if fixed:
            raise ValueError(f"Memory Maze: {sorted(fixed)} cannot be set (images-only obs, discrete actions; seed via reset(seed=))")
        unknown = sorted(set(task_kwargs) - set(TASK_KWARGS))
        if unknown:
            raise ValueError(f"Memory Maze: unknown task arguments {unknown}; valid keys: {sorted(TASK_KWARGS)}")
        for key, value in task_kwargs.items():
            check_type(f"MemoryMaze-{size}x{size}-v0", key, value, TASK_KWARGS[key])
        self.size = size
        self.task_kwargs = task_kwargs
        res = int(task_kwargs.get("camera_resolution", 64))
        self.observation_space = gym.spaces.Box(0, 255, (res, res, 3), np.uint8)  # (H, W, C)
        self.action_space = gym.spaces.Discrete(6)
        self.render_mode = render_mode
        self._dm_env = None  # built at the first reset: building compiles the MuJoCo model (seconds)
        self._last_obs = None

    def _build(self, seed: int):
        self.close()
        tasks = import_memory_maze_tasks()
        make_task = getattr(tasks, f"memory_maze_{self.size}x{self.size}")
        try:
            self._dm_env = make_task(seed=seed, image_only_obs=True, discrete_actions=True, **self.task_kwargs)
            return self._dm_env.reset()
        except TypeError:
            raise  # bad task_kwargs: not a rendering problem
        except Exception as e:
            self._dm_env = None
            raise RuntimeError(_render_error(_backend, e)) from e

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None or self._dm_env is None:
            # The maze generator (labmaze) takes its seed when the task is built, so a new seed means a
            # new build; later resets draw the next mazes from it deterministically.
            build_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
            ts = self._build(build_seed)
        else:
            ts = self._dm_env.reset()
        self._last_obs = ts.observation
        return ts.observation, {}

    def step(self, action):
        if self._dm_env is None:
            raise RuntimeError("Memory Maze: call reset() before step()")
        ts = self._dm_env.step(int(action))
        # dm_env ends an episode with step_type LAST; discount 0 would mean a true terminal state,
        # discount 1 (the only case in Memory Maze) a time limit.
        terminated = bool(ts.last() and ts.discount == 0.0)
        truncated = bool(ts.last() and not terminated)
        self._last_obs = ts.observation
        return ts.observation, float(ts.reward), terminated, truncated, {}

    def render(self):
        if self.render_mode == "rgb_array":
            return self._last_obs
        return None

    def close(self):
        # Frees the MuJoCo physics and its OpenGL context now, instead of at interpreter exit
        # (where dm_control's cleanup prints "cannot schedule new futures after shutdown").
        if self._dm_env is not None:
            self._dm_env.close()
            self._dm_env = None
