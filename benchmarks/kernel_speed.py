"""Fused kernels (agalite_kernels.py) against ppo_agalite.py's torch loops: operator and training timings.

Measures, interleaved round by round (fused, loops, GTrXL in turn, so that load changes hit all alike) and
reported as medians:
* operators: key_readout forward and forward + backward at the issue's size (T = 128, 8 sequences x 4 heads,
  eta 4, d 64, r 2: J = 3 rows), linear_recurrence forward + backward at the value side's size;
* training: the scripts' own ppo_loss forward + backward at T = 128, B = 8 (T-Maze sizes), AGaLiTe fused and
  loops, and GTrXL-128 for reference.
On a CPU each time is given twice: wall clock and the thread's CPU time (time.thread_time: unaffected by other
processes taking the core, which wall time is not; with --threads 1 the ops run in the calling thread).
On CUDA (--device cuda) "loops" are the torch loops on the GPU (the kernels switched off): the comparison.

    python benchmarks/kernel_speed.py --threads 1                 # CPU
    python benchmarks/kernel_speed.py --device cuda               # GPU (Triton kernels)
Writes {out}.csv and {out}.md.
"""

import contextlib
import csv
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@dataclass
class Args:
    device: str = "cpu"
    """torch device: cpu or cuda"""
    threads: int = 1
    """torch.set_num_threads (0: torch's default)"""
    op_rounds: int = 30
    """timed rounds of each operator"""
    train_rounds: int = 10
    """timed rounds of each training forward + backward"""
    train_T: int = 128
    train_B: int = 8
    models: bool = True
    """also time the training forward + backward of the models"""
    out: str = os.path.join("benchmarks", "results", "kernels_cpu")
    """output prefix"""


def timer(device):
    def run(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        w, c = time.perf_counter(), time.thread_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - w, time.thread_time() - c
    return run


def interleave(items, rounds, run):
    """items: {name: (fn, context factory)} -> {name: (median wall ms, median cpu ms)}."""
    times = {name: ([], []) for name in items}
    for name, (fn, ctx) in items.items():  # warm-up
        with ctx():
            fn()
            fn()
    for _ in range(rounds):
        for name, (fn, ctx) in items.items():
            with ctx():
                w, c = run(fn)
            times[name][0].append(w)
            times[name][1].append(c)
    return {name: (statistics.median(w) * 1e3, statistics.median(c) * 1e3) for name, (w, c) in times.items()}


def main(args: Args):
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    import agalite_kernels
    import ppo_agalite as P

    if not agalite_kernels.enable(device.type):
        raise SystemExit("error: no fused kernels for this device (see the line above)")
    fused, loops = contextlib.nullcontext, lambda: agalite_kernels.loops(device.type)
    run = timer(device)
    rows = []

    # operators
    T, B, H, eta, d, r = 128, 8, 4, 4, 64, 2
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device).requires_grad_()

    factors = [rand(T, B, H, s) for s in (eta, d) * 3]
    keep = (torch.rand(T, B, 1, 1, generator=g) > 0.05).float().to(device)
    c = torch.randn(T, B, H, r + 1, generator=g).to(device)
    h0 = rand(B, H, r + 1, eta * d)
    a, x, v0 = rand(T, B, H, 1, d), rand(T, B, H, r, d), rand(B, H, r, d)

    def key_fwd():
        with torch.no_grad():
            P.key_readout(*factors, keep, c, h0)

    def key_fwd_bwd():
        y, last, _ = P.key_readout(*factors, keep, c, h0)
        torch.autograd.grad(y.sum() + last.sum(), [*factors, h0])

    def rec_fwd_bwd():
        h = P.linear_recurrence(a, x, v0)
        torch.autograd.grad(h.sum(), [a, x, v0])

    for op, fn in [("key_readout forward", key_fwd), ("key_readout forward+backward", key_fwd_bwd),
                   ("linear_recurrence forward+backward", rec_fwd_bwd)]:
        res = interleave({"fused": (fn, fused), "loops": (fn, loops)}, args.op_rounds, run)
        for name, (w, cpu) in res.items():
            rows.append(dict(what=op, impl=name, wall_ms=w, cpu_ms=cpu))
        print(f"{op:>36}: fused {res['fused'][0]:.2f} ms (cpu {res['fused'][1]:.2f}), loops {res['loops'][0]:.2f} ms "
              f"(cpu {res['loops'][1]:.2f}): {res['fused'][1] / res['loops'][1]:.2f}x", flush=True)

    if args.models:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from conftest import load

        bench = load("benchmarks/inference_cost.py", "inference_cost")
        obs_space, act_space = bench.tmaze_spaces()
        shared = dict(n_layers=4, d_model=128, n_heads=4, d_head=64, d_ffc=128)
        Tt, Bt = args.train_T, args.train_B
        items = {}
        for label, model, sizes, ctx in [("AGaLiTe fused", "agalite", dict(shared, eta=4, r=2), fused),
                                         ("AGaLiTe loops", "agalite", dict(shared, eta=4, r=2), loops),
                                         ("GTrXL-128", "gtrxl", dict(shared, memory_len=128), contextlib.nullcontext)]:
            module = bench.load_script(model)
            agent, a_ = bench.build(module, sizes, obs_space, act_space, device)
            state = bench.nontrivial_state(model, agent, Bt, 16, device, 16, g)
            xs = bench.random_obs(Tt, Bt, 16, device, g)
            done = torch.zeros(Tt, Bt, device=device)
            done[Tt // 2, : Bt // 2] = 1.0
            action = torch.randint(0, 4, (Tt, Bt, 1), generator=g).to(device)
            lp, adv, ret, val = (torch.randn(Tt, Bt, generator=g).to(device) for _ in range(4))
            agent.train()

            def step(module=module, agent=agent, a_=a_, inputs=(xs, state, done, action, lp - 1.4, adv, ret, val)):
                loss, _ = module.ppo_loss(agent, a_, *inputs)
                loss.backward()
                agent.zero_grad(set_to_none=True)

            items[label] = (step, ctx)
        res = interleave(items, args.train_rounds, run)
        for name, (w, cpu) in res.items():
            rows.append(dict(what=f"training forward+backward T={Tt} B={Bt}", impl=name, wall_ms=w, cpu_ms=cpu))
            print(f"{'training T=%d B=%d' % (Tt, Bt):>36}: {name:>14} {w:.1f} ms (cpu {cpu:.1f})", flush=True)

    note = (f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; medians over interleaved "
            f"rounds ({args.op_rounds} per operator, {args.train_rounds} per model); cpu = the thread's CPU time")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["what", "impl", "wall_ms", "cpu_ms", "device", "threads", "torch"])
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row, device=str(device), threads=torch.get_num_threads(), torch=torch.__version__))
    lines = ["| what | implementation | wall ms (median) | CPU ms (median) |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['impl']} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} |" for r in rows]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n\n" + note + "\n")
    print("\n".join(lines) + "\n\n" + note)
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
