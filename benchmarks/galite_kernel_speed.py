"""GaLiTe's recurrence: one attention layer's forward + backward, three ways (ppo_galite.py's default sizes,
d_model 128, H 4, d 64, eta 2, T = 128, B = 8, float32):
* "autograd loop": ppo_galite.py's loop over steps, autograd through it (the layer as written there);
* "torch-loop op": galite_kernels.attention, the custom operator's torch loops (block-start checkpoints and
  the adjoint backward), the C++ kernel switched off;
* "C++": the same operator with galite_kernels.cpp registered for the CPU (galite_kernels.enable).
Interleaved round by round (so that load changes hit all alike), reported as medians: wall clock and the
thread's CPU time (time.thread_time, unaffected by other processes taking the core; with --threads 1 the work
runs in the calling thread). Memory, each variant's forward + backward once in a fresh process: the growth of
its peak resident set over what it held before (VmHWM, reset through /proc/self/clear_refs), and the bytes the
forward saves for the backward (torch.autograd.graph.saved_tensors_hooks).

    OMP_NUM_THREADS=1 python benchmarks/galite_kernel_speed.py
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import galite_kernels  # noqa: E402
import ppo_galite  # noqa: E402

# the layer's forward with its loop (forward_with_loop) and with the operator (forward_with_attention), from the tests
_spec = importlib.util.spec_from_file_location("test_galite_kernels", os.path.join(ROOT, "tests", "test_galite_kernels.py"))
layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layers)

VARIANTS = ("autograd loop", "torch-loop op", "C++")


@dataclass
class Args:
    threads: int = 1
    """torch.set_num_threads"""
    rounds: int = 5
    """timed rounds of each variant (after one warm-up each)"""
    T: int = 128
    B: int = 8
    memory: bool = True
    """also measure each variant's peak memory (one fresh process per variant)"""
    memory_of: str = ""
    """(internal) measure the peak memory of this variant in this process and print it as JSON"""


def setup(T, B, seed=0):
    torch.manual_seed(seed)
    a = ppo_galite.Args()
    layer = ppo_galite.GaLiTeAttention(a.d_model, a.n_heads, a.d_head, a.eta)
    g = torch.Generator().manual_seed(seed)
    H, d, F = a.n_heads, a.d_head, a.eta * a.d_head
    x = torch.randn(T, B, a.d_model, generator=g, requires_grad=True)
    keep = torch.ones(T, B)
    keep[T // 3, 0] = keep[T // 2, 3] = 0.0  # episode starts
    state = (torch.randn(B, H, d, F, generator=g).requires_grad_(), torch.rand(B, H, F, generator=g).requires_grad_())
    weights = [torch.randn(T, B, a.d_model, generator=g), torch.randn(B, H, d, F, generator=g), torch.randn(B, H, F, generator=g)]
    return layer, x, keep, state, weights


def step_fn(variant, layer, x, keep, state, weights):
    forward = layers.forward_with_loop if variant == "autograd loop" else layers.forward_with_attention

    def step():
        if variant == "C++":
            galite_kernels.enable("cpu")
        else:
            galite_kernels.disable("cpu")
        out, (C, s) = forward(layer, x, state, keep)
        loss = sum((y * w).sum() for y, w in zip((out, C, s), weights))
        torch.autograd.grad(loss, [x, *state, *layer.parameters()])

    return step


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def saved_bytes(step):
    """What the forward keeps for the backward: the storages autograd saves (saved_tensors_hooks), each once."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def measure_memory(variant, T, B):
    """In a fresh process: the growth of the peak resident set over the forward + backward (the peak reset just
    before it, through /proc/self/clear_refs, after a tiny warm-up step that pages in the code the step runs: the
    resident set counts code as well as data), and the bytes saved for the backward (MiB)."""
    if variant == "C++" and not galite_kernels.enable("cpu"):
        return None
    step_fn(variant, *setup(4, 4))()  # a tiny warm-up: the code it runs paged in (resident too), little memory held
    step = step_fn(variant, *setup(T, B))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM) to the current one
    before = rss_bytes()
    step()
    peak = (peak_rss_bytes() - before) / 2**20
    return {"peak_mib": peak, "saved_mib": saved_bytes(step) / 2**20}


def main(args: Args):
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args.T, args.B)))
        return
    have_cpp = galite_kernels.enable("cpu")
    variants = [v for v in VARIANTS if have_cpp or v != "C++"]
    inputs = setup(args.T, args.B)
    steps = {v: step_fn(v, *inputs) for v in variants}
    wall, cpu = {v: [] for v in variants}, {v: [] for v in variants}
    for v in variants:
        steps[v]()  # warm-up
    for _ in range(args.rounds):
        for v in variants:
            w, c = time.perf_counter(), time.thread_time()
            steps[v]()
            wall[v].append(time.perf_counter() - w)
            cpu[v].append(time.thread_time() - c)
    memory = {}
    if args.memory:
        for v in variants:
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--memory-of", v, "--threads", str(args.threads),
                 "--T", str(args.T), "--B", str(args.B)], capture_output=True, text=True, timeout=300)
            memory[v] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    base = statistics.median(cpu["autograd loop"])
    print(f"GaLiTe layer forward + backward, T={args.T}, B={args.B}, d_model 128, H 4, d 64, eta 2, float32, "
          f"{torch.get_num_threads()} thread(s), medians of {args.rounds} interleaved rounds")
    print(f"{'variant':<15} {'wall ms':>9} {'cpu ms':>9} {'speed-up':>9} {'peak MiB':>9} {'saved MiB':>10}")
    for v in variants:
        w, c = statistics.median(wall[v]) * 1e3, statistics.median(cpu[v]) * 1e3
        mem = memory.get(v) or {}
        peak, saved = (f"{mem[k]:9.0f}" if k in mem else "" for k in ("peak_mib", "saved_mib"))
        print(f"{v:<15} {w:9.1f} {c:9.1f} {base * 1e3 / c:8.1f}x {peak:>9} {saved:>10}")


if __name__ == "__main__":
    main(tyro.cli(Args))
