"""Builds a fused kernels' C++ file once per machine (agalite_kernels.py, galite_kernels.py): with
torch.utils.cpp_extension.load_inline, cached in torch's extension directory under a key made of the source, the
flags, torch's version and the machine, so that no stale or foreign build is ever loaded."""

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
