"""What agalite_kernels.py and galite_kernels.py share: building a fused kernels' C++ file once per machine (with
torch.utils.cpp_extension.load_inline, cached in torch's extension directory under a key made of the source, the
flags, torch's version and the machine, so that no stale or foreign build is ever loaded), and `Kernels`, which
registers a module's kernels for its torch.library operators per device type, switches them off and on, and says once
why where they cannot be had."""

import contextlib
import fcntl
import glob
import hashlib
import os
import platform
import sys
import time

import torch


def cpp_flags():
    """-O3; OpenMP (at::parallel_for in the libgomp torch has loaded, and `omp simd` loops); AVX2 and FMA where torch
    itself uses them on this CPU (the capability is part of the build's cache key)."""
    vector = ["-mavx2", "-mfma"] if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else []
    return ["-O3", "-fopenmp", *vector]


def load(name, cpp_file, functions, verbose=False):
    """(the built module, None), or (None, why not): no compiler, no ninja, a compilation error. Says on stderr how
    long a build took when it was not a cache hit."""
    from torch.utils import cpp_extension

    bin_dir = os.path.dirname(sys.executable)  # ninja installed in a virtualenv that is not activated
    if os.path.exists(os.path.join(bin_dir, "ninja")) and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    source, flags = open(cpp_file).read(), cpp_flags()
    key = hashlib.sha1("\n".join([source, *flags, torch.__version__, platform.machine()]).encode()).hexdigest()[:10]
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()  # as load_inline finds it
    built = glob.glob(os.path.join(root, f"{name}_{key}", "*.so")) + glob.glob(os.path.join(root, "*", f"{name}_{key}", "*.so"))
    if not built:
        print(f"{name}: building the fused C++ kernels (once per machine, about a minute)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        with build_lock(root, f"{name}_{key}"):
            module = cpp_extension.load_inline(name=f"{name}_{key}", cpp_sources=[source], functions=functions,
                                               extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=verbose)
    except Exception as e:  # noqa: BLE001  (whatever failed, the torch loops run instead)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        first = next((line for line in lines if "error" in line.lower() and "Error building" not in line), lines[0])
        return None, f"the fused C++ kernels could not be built ({first[-200:]})"
    if time.perf_counter() - t0 > 2:
        print(f"{name}: built the fused C++ kernels in {time.perf_counter() - t0:.0f} s (cached for later runs)",
              file=sys.stderr, flush=True)
    return module, None


@contextlib.contextmanager
def build_lock(root, build_name):
    """One build of `build_name` at a time on this machine, and no wait on a dead one. torch's own guard is a `lock`
    file in the build directory that a process removes when its build ends: a build killed midway (Ctrl-C twice,
    SIGKILL, a job's time limit) leaves it behind, and every later load_inline of that name then waits for it forever.
    An flock is released by the kernel when its holder dies, so whoever holds this one is the only builder alive and
    may remove a `lock` file it finds."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f"{build_name}.flock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits only while another live process builds or loads it
        try:
            # (load_inline builds in root/<name>, or in root/py311_cpu/<name> when TORCH_EXTENSIONS_DIR is unset)
            for stale in glob.glob(os.path.join(root, build_name, "lock")) + glob.glob(os.path.join(root, "*", build_name, "lock")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def opdef(name):
    """The torch.library custom op `name` (defined by the script or module that owns it: import that first)."""
    from torch._library.custom_ops import _maybe_get_opdef  # (what torch.library.register_kernel itself uses)

    found = _maybe_get_opdef(name)
    if found is None:
        raise RuntimeError(f"the operator {name} is not defined: import the module that defines it first")
    return found


class Kernels:
    """The fused kernels of one module (`name`) for the operators `ops`: `implementations(device_type)` gives them for
    a device type ({operator name: function}, or None with the reason said); the built C++ module (`extension`), the
    device types whose kernels are registered (`registered`), switched off (`off`: device type -> what switches them
    back on), or unavailable (`failed`: device type -> why, said once on stderr, `fallback` naming what runs instead).
    Its enable, disable, enabled and loops are the module's functions of those names."""

    def __init__(self, name, ops, fallback, cpp_file, cpp_functions, implementations):
        self.name, self.ops, self.fallback = name, ops, fallback
        self.cpp_file, self.cpp_functions, self.implementations = cpp_file, cpp_functions, implementations
        self.extension, self.registered, self.failed, self.off = None, set(), {}, {}

    def say_once(self, device_type, why):
        if device_type not in self.failed:
            self.failed[device_type] = why
            print(f"{self.name}: {why}; {self.fallback} on {device_type} (slower, same results)", file=sys.stderr,
                  flush=True)

    def build_cpu(self, verbose=False):
        """The C++ module (built on first use, then loaded from torch's extension cache), or None (the reason said)."""
        if self.extension is None and "cpu" not in self.failed:
            self.extension, why = load(self.name, self.cpp_file, self.cpp_functions, verbose)
            if why:
                self.say_once("cpu", why)
        return self.extension

    def enable(self, device_type="cpu"):
        """Registers the fused kernels of the operators for `device_type` ("cpu", "cuda"), building them if need be,
        or switches them back on after `disable`. Returns True when they are in use, False when the torch loops stay
        (the reason printed once)."""
        device_type = torch.device(device_type).type
        if device_type in self.off:
            self.off.pop(device_type).close()
        if device_type in self.registered:
            return True
        impls = self.implementations(device_type)
        if impls is None:
            return False
        for name, fn in impls.items():
            torch.library.register_kernel(name, device_type, fn)
        self.registered.add(device_type)
        return True

    def disable(self, device_type="cpu"):
        """Switches the registered kernels off for `device_type`: the operators run as torch loops again."""
        device_type = torch.device(device_type).type
        if device_type in self.registered and device_type not in self.off:
            stack = contextlib.ExitStack()
            for name in self.ops:
                stack.enter_context(opdef(name).set_kernel_enabled(device_type, False))
            self.off[device_type] = stack

    def enabled(self, device_type="cpu"):
        """Whether the fused kernels are in use for this device type."""
        device_type = torch.device(device_type).type
        return device_type in self.registered and device_type not in self.off

    @contextlib.contextmanager
    def loops(self, device_type="cpu"):
        """Within the block, the operators run as their torch loops on this device type."""
        device_type = torch.device(device_type).type
        was_on = self.enabled(device_type)
        self.disable(device_type)
        try:
            yield
        finally:
            if was_on:
                self.off.pop(device_type).close()
