"""Inference and memory cost of one acting step: AGaLiTe against GTrXL (and GaLiTe, LSTM), measured.

The paper's headline claim (Pramanik et al., TMLR 2024): AGaLiTe's inference is at least 40% cheaper than
GTrXL's and its memory more than 50% smaller. This script builds every model EXACTLY as the training
scripts do (`Agent` and `Args` imported from ppo_agalite.py, ppo_gtrxl.py, ppo_galite.py, ppo_lstm.py; a
script that does not exist yet is skipped with a note) on T-Maze's spaces (Box (16,), Discrete(4)), and for
one acting step (T = 1, torch.no_grad, after warm-up, from a non-trivial state: the state reached after a
few real steps; for GTrXL the cache is then made full, every slot valid, so a step attends over
memory_len + 1 positions) measures:

* time per step (get_action_and_value, as the PPO loop calls it, the new state fed back) at each batch size:
  median, p10/p90 and quartiles over repeats (a repeat = the mean over a few consecutive steps; repeats are
  taken round-robin over the models, so that changes of machine load spread over all of them);
* floating-point operations per step counted by torch.utils.flop_counter.FlopCounterMode. It counts
  MATMUL-LIKE OPS ONLY: aten.mm, addmm, bmm, baddbmm, convolutions and fused attention kernels (2 flops per
  multiply-add; the bias of addmm is not counted). Element-wise work (activations, gates, LayerNorm, the
  AGaLiTe recurrences, softmax, masking) is NOT counted; an estimate of the attention part of it is given
  separately (column `elementwise_analytic`). Next to the count, the analytic formula below, per model;
* bytes of recurrent state (cache) per environment: sum of the state tensors' sizes / batch, next to the
  analytic formula below;
* training memory of one forward + backward over a chunk of T = 128 steps (the scripts' --num-steps: a whole
  rollout replayed as one sequence) at batch 8 sequences, from a non-trivial stored start state, with the
  PPO-style loss on log-probabilities, entropy and values:
    - `train_peak_bytes`: on CUDA, torch.cuda.max_memory_allocated() minus the memory allocated before the
      forward; on CPU, the peak of the running sum of the CPU allocator's allocations and frees recorded by
      torch.profiler (profile_memory=True) during forward + backward, relative to its start. Parameters
      already allocated are not included; their gradients, allocated in the backward, are.
    - `train_saved_bytes`: bytes of the distinct tensors autograd saves for the backward (activations,
      counted once per storage through torch.autograd.graph.saved_tensors_hooks; parameters excluded), the
      part of training memory that grows with T, batch and context: device independent.
    - `train_step_ms`: the median time of a forward + backward of the scripts' own PPO loss (`ppo_loss`, on
      random advantages and returns) over --train-rounds rounds taken round-robin over the models (as the
      acting times are), so that load changes hit every model alike; `compiled_train_step_ms` the same with
      `ppo_loss` compiled (--compile).
* a sweep: GTrXL memory_len in {32, 64, 128, 256, 512}; AGaLiTe eta in {1, 2, 4, 8} x r in {1, 2, 4};
  GaLiTe at its script's default feature map; the LSTM at the release's 600 units; all transformers with
  the release's T-Maze sizes (4 layers, d_model 128, 4 heads of 64, d_ffc 128).

Analytic FLOPs of one step at batch B (T = 1; matmul-like ops only, 2 flops per multiply-add; D = d_model,
H = n_heads, d = d_head, F = d_ffc, L = n_layers, o = observation features (16), A = actions (4)):
    common (embed, actor, critic):      2 B (o D + D A + D)
    per GRU-gated block, around the attention: two GRU gates 2 x 2 B (3 D^2 + 2 D^2 + D^2) = 24 B D^2,
                                        feed-forward 2 x 2 B D F = 4 B D F
    AGaLiTe attention per layer:        projection 2 B D H (5 d + 3 eta) + output 2 B H d D; its recurrences
                                        are element-wise, O(H r eta d) per step (estimate below)
    GaLiTe attention per layer:         projection 2 B D H (5 d + 2 eta), the query's second layer (the
                                        release's) 2 B H d (d + eta), output 2 B H d D, and the read-out
                                        C_t query_t, 2 B H d (eta d) when done by a matrix product
    GTrXL attention per layer (K = memory_len + 1 positions: the cache and the step itself):
                                        query 2 B D H d + keys and values of all K positions 2 B K D 2 H d
                                        (the cache holds layer inputs, so keys and values are recomputed)
                                        + relative-position projection 2 K D H d (once per step, not per env)
                                        + content scores 2 B H K d + position scores 2 B H K d
                                        + weighted values 2 B H K d + output 2 B H d D
    LSTM (one layer of h units):        input projection 2 B D 4h + recurrent product 2 B h 4h, i.e. the
                                        4h (h + D) multiply-adds per env of the cell, + embed and heads with h
    GTrXL with --kv-cache (gtrxl_kv): the state also holds each layer's keys and values, so a step projects
                                        only its own: the terms 2 B K D 2 H d above become 2 B D 2 H d
                                        (W_R R is still formed for every distance at every step)
    Note: ppo_gtrxl.py by default caches each layer's INPUTS (as Transformer-XL does), so every step
    recomputes the keys and values of all cached positions; that is most of its per-step FLOPs.
Element-wise estimate of the attention core per layer and env (not counted by FlopCounterMode):
    AGaLiTe: feature maps, gates and gated inputs ~ 5 H eta d + H d; the three recurrences ~ 3 H r (eta d + d)
             + 3 H eta d; read-out 2 H r eta d + 2 H r d + 2 H eta d  =>  5 H r (eta d + d) + 10 H eta d + H d
    GTrXL:   biases, scale, mask and softmax over K positions ~ 2 H d + 6 H K
Analytic state per environment (float32 = 4 bytes):
    AGaLiTe  L H (r d + r eta d + eta d) floats + the oscillators' tick (one int64)
    GaLiTe   L H (d eta d + eta d) floats
    GTrXL    L memory_len D floats + the episode mask (memory_len bools); with --kv-cache L memory_len (D + 2 H d)
    LSTM     2 h floats

Outputs: {out}.csv (one row per model config x batch size; training columns are per config, repeated on
its rows), {out}.md (the table of ratios AGaLiTe / GTrXL at the paper's settings), printed too. The figure:
`python plots/inference_cost_plot.py --csv {out}.csv`.

    python benchmarks/inference_cost.py --quick --out /tmp/ic            # tiny sizes, seconds
    python benchmarks/inference_cost.py --threads 1                      # the full sweep (CPU)
    python benchmarks/inference_cost.py --device cuda                    # on a GPU
    python benchmarks/inference_cost.py --only-profile                   # torch.profiler of AGaLiTe's step
Timings depend on the machine and its load; run on a quiet machine for numbers to report.
"""

import csv
import dataclasses
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SCRIPTS = {"agalite": "ppo_agalite.py", "galite": "ppo_galite.py", "gtrxl": "ppo_gtrxl.py", "gtrxl_kv": "ppo_gtrxl.py", "lstm": "ppo_lstm.py"}
COUNTED_OPS = "aten.mm, aten.addmm, aten.bmm, aten.baddbmm, convolutions, fused attention"

# the release's T-Maze sizes (shared/AGALITE.md section 5), and tiny ones for --quick
FULL = dict(
    shared=dict(n_layers=4, d_model=128, n_heads=4, d_head=64, d_ffc=128),
    memory_lens=(32, 64, 128, 256, 512), etas=(1, 2, 4, 8), rs=(1, 2, 4), lstm=dict(d_model=128, lstm_hidden=600),
    batch_sizes=(1, 8, 128), train_T=128, train_B=8, ref_agalite=(4, 2), ref_gtrxl=(128, 256), warm_steps=16,
)
QUICK = dict(
    shared=dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_ffc=16),
    memory_lens=(4, 8), etas=(1, 2), rs=(1, 2), lstm=dict(d_model=16, lstm_hidden=24),
    batch_sizes=(1, 4), train_T=8, train_B=2, ref_agalite=(2, 2), ref_gtrxl=(4, 8), warm_steps=3,
)

COLUMNS = [
    "model", "config", "memory_len", "eta", "r", "batch", "n_params",
    "time_median_ms", "time_p10_ms", "time_q25_ms", "time_q75_ms", "time_p90_ms", "time_repeats", "time_inner_steps",
    "flops_counted", "flops_analytic", "flops_per_env_counted", "elementwise_analytic",
    "state_bytes_per_env", "state_bytes_analytic",
    "train_T", "train_B", "train_peak_bytes", "train_peak_method", "train_saved_bytes", "train_step_ms", "compiled_train_step_ms",
    "compiled_time_median_ms", "compiled_time_p10_ms", "compiled_time_p90_ms", "compile_s",
    "device", "threads", "torch",
]


@dataclass
class Args:
    device: str = "cpu"
    """torch device: cpu or cuda"""
    quick: bool = False
    """tiny model sizes, two batch sizes and few repeats: an end-to-end check in seconds"""
    out: str = os.path.join("benchmarks", "results", "inference_cost")
    """output prefix: writes {out}.csv and {out}.md"""
    repeats: int = 30
    """timed repeats per (config, batch); each repeat averages a few consecutive steps"""
    min_repeats: int = 5
    """repeats always taken, even past --max-seconds"""
    max_seconds: float = 3.0
    """stop timing a (config, batch) after this long, once --min-repeats are done"""
    threads: int = 0
    """torch.set_num_threads (0 = torch's default; --quick uses 1 unless told). On a shared or small machine use 1:
    with more threads than free cores, OpenMP waits on descheduled threads and small steps take 100x longer"""
    models: tuple[str, ...] = ("agalite", "galite", "gtrxl", "gtrxl_kv", "lstm")
    """which models to run (those whose script exists); gtrxl_kv: ppo_gtrxl.py --kv-cache at the ratio table's memory lengths"""
    compile: bool = False
    """also time the acting step compiled as the scripts' --compile does (torch.compile of their `act`; on CUDA
    with CUDA graphs, mode reduce-overhead): columns compiled_time_*, and compile_s, the first calls' time"""
    batch_sizes: tuple[int, ...] = ()
    """acting batch sizes to time (default: 1 8 128; --quick: 1 4)"""
    paper_only: bool = False
    """only the configurations of the ratio table (AGaLiTe eta=4 r=2, GTrXL-128 and -256) and the LSTM"""
    train_memory: bool = True
    """measure the training forward + backward memory and time"""
    train_rounds: int = 10
    """timed rounds of the training forward + backward (after two warm-up calls)"""
    train_T: int = 0
    """steps per training sequence (0: 128; --quick: 8), e.g. 801 for whole passive T-Maze episodes at L = 800"""
    train_B: int = 0
    """sequences per training minibatch (0: 8; --quick: 2)"""
    profile: bool = False
    """also profile AGaLiTe's acting step (torch.profiler) at batch 1 and 16, print the tables, write {out}_profile.txt"""
    only_profile: bool = False
    """only the profile"""
    seed: int = 0
    """seed of the models' initialisation and the random inputs"""
    fused_kernels: bool = True
    """AGaLiTe's recurrence operators as fused kernels (agalite_kernels.py: C++ on the CPU, Triton on CUDA), as the
    script's default; --no-fused-kernels: its torch loops, on CUDA too (for the comparison)"""


# --------------------------------------------------------------------------------------------- models
def load_script(name):
    """The training script's module (ppo_<name>.py at the repository root), or None when it does not exist."""
    path = os.path.join(ROOT, SCRIPTS[name])
    if not os.path.exists(path):
        return None
    module_name = SCRIPTS[name][:-3]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def tmaze_spaces():
    """T-Maze's observation and action spaces, taken from the environment the scripts train on."""
    import envs  # noqa: F401  (registers TMaze-v0)

    env = gym.make("TMaze-v0")
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


def make_args(module, sizes):
    """module.Args with the given sizes, keeping only the fields that script has (the LSTM has no heads)."""
    names = {f.name for f in dataclasses.fields(module.Args)}
    return module.Args(**{k: v for k, v in sizes.items() if k in names})


def build(module, sizes, obs_space, act_space, device, seed=0):
    torch.manual_seed(seed)
    args = make_args(module, sizes)
    agent = module.Agent(obs_space, act_space, args).to(device)
    return agent.eval(), args


def configs(plan, available, paper_only=False):
    """(model, label, sizes) for the sweep, in the order of the table; paper_only: only the configurations of
    the ratio table (AGaLiTe at the paper's eta and r, GTrXL at its two memory lengths) and the LSTM."""
    if paper_only:
        eta, r = plan["ref_agalite"]
        plan = dict(plan, etas=(eta,), rs=(r,), memory_lens=plan["ref_gtrxl"])
    out = []
    if "agalite" in available:
        for eta in plan["etas"]:
            for r in plan["rs"]:
                out.append(("agalite", f"AGaLiTe eta={eta} r={r}", dict(plan["shared"], eta=eta, r=r)))
    if "galite" in available:
        out.append(("galite", "GaLiTe", dict(plan["shared"])))
    if "gtrxl" in available:
        for m in plan["memory_lens"]:
            out.append(("gtrxl", f"GTrXL-{m}", dict(plan["shared"], memory_len=m)))
    if "gtrxl_kv" in available:
        for m in plan["ref_gtrxl"]:
            out.append(("gtrxl_kv", f"GTrXL-{m} KV", dict(plan["shared"], memory_len=m, kv_cache=True)))
    if "lstm" in available:
        out.append(("lstm", f"LSTM-{plan['lstm']['lstm_hidden']}", dict(plan["lstm"])))
    return out


# ------------------------------------------------------------------------------------------ analytics
def _block_flops(a, B):
    """The GRU gates and feed-forward part of one block, at batch B (T = 1)."""
    D = a.d_model
    return 24 * B * D * D + 4 * B * D * a.d_ffc


def analytic_flops(model, a, B, n_obs, n_act):
    """Matmul-like FLOPs of one acting step at batch B (what FlopCounterMode counts); see the module docstring."""
    if model == "lstm":
        D, h = a.d_model, a.lstm_hidden
        return 2 * B * (n_obs * D + 4 * h * D + 4 * h * h + h * n_act + h)
    D, H, d, L = a.d_model, a.n_heads, a.d_head, a.n_layers
    common = 2 * B * (n_obs * D + D * n_act + D)
    if model == "agalite":
        attn = 2 * B * D * H * (5 * d + 3 * a.eta) + 2 * B * H * d * D
    elif model == "galite":
        attn = 2 * B * D * H * (5 * d + 2 * a.eta) + 2 * B * H * d * (d + a.eta) + 2 * B * H * d * D + 2 * B * H * d * a.eta * d
    elif model == "gtrxl":
        K = a.memory_len + 1
        attn = (2 * B * D * H * d + 2 * B * K * D * 2 * H * d + 2 * K * D * H * d
                + 3 * 2 * B * H * K * d + 2 * B * H * d * D)
    elif model == "gtrxl_kv":  # keys and values of the new step only; W_R R is still formed at every step
        K = a.memory_len + 1
        attn = (2 * B * D * H * d + 2 * B * D * 2 * H * d + 2 * K * D * H * d
                + 3 * 2 * B * H * K * d + 2 * B * H * d * D)
    else:
        raise ValueError(model)
    return common + L * (attn + _block_flops(a, B))


def elementwise_estimate(model, a):
    """Rough element-wise operation count of the attention core per env and step (all layers); not counted
    by FlopCounterMode. None for the LSTM (its cell's element-wise work is O(h), small next to 4h(h+D))."""
    if model == "agalite":
        H, d, eta, r = a.n_heads, a.d_head, a.eta, a.r
        return a.n_layers * (5 * H * r * (eta * d + d) + 10 * H * eta * d + H * d)
    if model in ("gtrxl", "gtrxl_kv"):
        return a.n_layers * (2 * a.n_heads * a.d_head + 6 * a.n_heads * (a.memory_len + 1))
    return None


def analytic_state_bytes(model, a, float_bytes=4):
    """Bytes of recurrent state per environment, from the formulas in the module docstring."""
    if model == "agalite":
        H, d, eta, r = a.n_heads, a.d_head, a.eta, a.r
        return float_bytes * a.n_layers * H * (r * d + r * eta * d + eta * d) + 8  # + tick (int64)
    if model == "galite":
        H, d, eta = a.n_heads, a.d_head, a.eta
        return float_bytes * a.n_layers * H * (d * eta * d + eta * d)
    if model == "gtrxl":
        return float_bytes * a.n_layers * a.memory_len * a.d_model + a.memory_len  # + mask (bool)
    if model == "gtrxl_kv":
        return float_bytes * a.n_layers * a.memory_len * (a.d_model + 2 * a.n_heads * a.d_head) + a.memory_len
    if model == "lstm":
        return float_bytes * 2 * a.lstm_hidden
    raise ValueError(model)


def state_bytes_per_env(state):
    B = state[0].shape[1]
    return sum(s.numel() * s.element_size() for s in state) / B


# ------------------------------------------------------------------------------------------- measuring
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_obs(T, B, n_obs, device, generator):
    return torch.randint(0, 2, (T, B, n_obs), generator=generator).float().to(device)  # T-Maze: 0/1 features


@torch.no_grad()
def nontrivial_state(model, agent, B, n_obs, device, warm_steps, generator):
    """The state after `warm_steps` real steps (an episode starting at the first); for GTrXL the cache is then
    made full: its empty slots are filled with copies of the steps written, and every slot marked valid, so
    that a step attends over all memory_len + 1 positions as it does in the middle of a long episode."""
    state = agent.initial_state(B, device)
    done = torch.zeros(1, B, device=device)
    for t in range(warm_steps):
        done.fill_(1.0 if t == 0 else 0.0)
        _, state = agent.memory(random_obs(1, B, n_obs, device, generator), state, done)
    if model in ("gtrxl", "gtrxl_kv"):
        cache, valid = state[:2]
        M, w = cache.shape[2], min(warm_steps, cache.shape[2])
        slots = M - w + torch.arange(M, device=device) % w  # the last w slots hold the steps written
        state = (cache[:, :, slots].contiguous(), torch.ones_like(valid), *state[2:])
        state = agent.refresh_keys_values(state)  # --kv-cache: the keys and values of the filled slots
    return state


def _step(item):
    if "act" in item:  # the script's own acting step, compiled
        if item["state"][0].is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        *_, state = item["act"](item["agent"], item["x"][0], item["state"], item["done"][0])
        # on CUDA the step replays a CUDA graph, which overwrites its outputs at the next replay: the scripts keep
        # the state in a copy, and so does this
        item["state"] = tuple(s.clone() for s in state) if state[0].is_cuda else state
    else:
        _, _, _, _, item["state"] = item["agent"].get_action_and_value(item["x"], item["state"], item["done"])


@torch.no_grad()
def time_interleaved(items, device, args, warmup=3):
    """Seconds per acting step for several models at one batch size. Repeats are taken round-robin over the
    models (one repeat of each in turn), so that a change of machine load hits all of them alike rather than
    whichever model was being timed. A repeat is the mean of `inner` consecutive steps (about 5 ms, at
    least 1 step), the new state fed back as in the PPO loop. A model stops after --repeats repeats, or once
    it has --min-repeats and has been timed for --max-seconds. Sets item["samples"] and item["inner"]."""
    for item in items:
        for _ in range(warmup):
            _step(item)
        sync(device)
        t0 = time.perf_counter()
        _step(item)
        sync(device)
        item["inner"] = int(min(20, max(1, 0.005 // max(time.perf_counter() - t0, 1e-9))))
        item["samples"], item["spent"] = [], 0.0
    active = list(items)
    for _ in range(args.repeats):
        for item in list(active):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(item["inner"]):
                _step(item)
            sync(device)
            elapsed = time.perf_counter() - t0
            item["samples"].append(elapsed / item["inner"])
            item["spent"] += elapsed
            if len(item["samples"]) >= args.min_repeats and item["spent"] > args.max_seconds:
                active.remove(item)
        if not active:
            break


@torch.no_grad()
def count_flops(agent, state, B, n_obs, device, generator):
    x = random_obs(1, B, n_obs, device, generator)
    counter = FlopCounterMode(display=False)
    with counter:
        agent.get_action_and_value(x, state, torch.zeros(1, B, device=device))
    return counter.get_total_flops(), {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}


def training_memory(model, agent, n_obs, n_act, T, B, device, warm_steps, generator):
    """Training forward + backward over a chunk of T steps at batch B from a non-trivial start state.
    Returns (peak bytes, how it was measured, saved-tensor bytes); its time is measured by training_times."""
    state = nontrivial_state(model, agent, B, n_obs, device, warm_steps, generator)
    x = random_obs(T, B, n_obs, device, generator)
    done = torch.zeros(T, B, device=device)
    done[T // 2, : B // 2] = 1.0  # some episodes end inside the chunk, as in a rollout
    action = torch.randint(0, n_act, (T, B, 1), generator=generator).to(device)
    agent.train()

    def loss_fn():
        _, logprob, entropy, value, _ = agent.get_action_and_value(x, state, done, action)
        return -logprob.mean() - 0.01 * entropy.mean() + 0.5 * value.pow(2).mean()

    def step():
        loss_fn().backward()

    for _ in range(2):  # warm-up
        agent.zero_grad(set_to_none=True)
        step()
    agent.zero_grad(set_to_none=True)

    # bytes of the distinct tensors autograd keeps for the backward (parameters excluded)
    params = {p.untyped_storage().data_ptr() for p in agent.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[(storage.data_ptr(), t.device)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    del loss
    agent.zero_grad(set_to_none=True)
    saved_bytes = sum(saved.values())

    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        peak, method = torch.cuda.max_memory_allocated(device) - base, "cuda.max_memory_allocated"
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
        current = peak = 0
        for e in events:
            current += e.nbytes()
            peak = max(peak, current)
        method = "profiler CPU alloc peak"
    agent.zero_grad(set_to_none=True)
    agent.eval()
    return peak, method, saved_bytes


def training_times(built, plan, n_obs, n_act, device, args, generator):
    """Median seconds of a forward + backward of each config's script's own `ppo_loss` (T = train_T steps x
    train_B sequences, a non-trivial start state, an episode start inside), eager and with --compile also
    compiled, timed round-robin over the configs. Sets cfg["train"]["train_step_ms"] (and compiled_...)."""
    T, B = plan["train_T"], plan["train_B"]
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    items = []
    for cfg in built:
        module, agent = cfg["module"], cfg["agent"]
        state = nontrivial_state(cfg["model"], agent, B, n_obs, device, plan["warm_steps"], generator)
        x = random_obs(T, B, n_obs, device, generator)
        done = torch.zeros(T, B, device=device)
        done[T // 2, : max(1, B // 2)] = 1.0
        action = torch.randint(0, n_act, (T, B, 1), generator=generator).to(device)
        logprobs, advantages, returns, values = (torch.randn(T, B, generator=generator).to(device) for _ in range(4))
        inputs = (x, state, done, action, logprobs - 1.4, advantages, returns, values)
        fns = [("train_step_ms", module.ppo_loss)]
        if args.compile:
            torch._dynamo.reset()
            fns.append(("compiled_train_step_ms", torch.compile(module.ppo_loss, fullgraph=True, mode=mode)))
        for column, fn in fns:
            def step(fn=fn, agent=agent, a=cfg["args"], inputs=inputs):
                if device.type == "cuda" and fn is not module.ppo_loss:
                    torch.compiler.cudagraph_mark_step_begin()
                loss, stats = fn(agent, a, *inputs)
                stats.tolist()
                loss.backward()
                agent.zero_grad(set_to_none=True)
            agent.train()
            for _ in range(2):  # warm-up (and the compilation)
                step()
            items.append(dict(cfg=cfg, column=column, step=step, times=[]))
    for _ in range(args.train_rounds):
        for item in items:
            item["cfg"]["agent"].train()
            sync(device)
            t0 = time.perf_counter()
            item["step"]()
            sync(device)
            item["times"].append(time.perf_counter() - t0)
    for item in items:
        item["cfg"]["agent"].eval()
        item["cfg"]["train"][item["column"]] = statistics.median(item["times"]) * 1e3


def quantiles(samples):
    ms = np.asarray(samples) * 1e3
    return {f"time_{k}_ms": float(np.percentile(ms, q)) for k, q in [("median", 50), ("p10", 10), ("q25", 25), ("q75", 75), ("p90", 90)]}


# ---------------------------------------------------------------------------------------- profiling
def profile_agalite(module, plan, obs_space, act_space, device, batches=(1, 16), steps=50, top=20):
    """torch.profiler of AGaLiTe's acting step at the paper's sizes: the ops that take the time."""
    from torch.profiler import ProfilerActivity, profile

    n_obs = obs_space.shape[0]
    eta, r = plan["ref_agalite"]
    agent, _ = build(module, dict(plan["shared"], eta=eta, r=r), obs_space, act_space, device)
    generator = torch.Generator().manual_seed(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    texts = []
    for B in batches:
        state = nontrivial_state("agalite", agent, B, n_obs, device, plan["warm_steps"], generator)
        x = random_obs(1, B, n_obs, device, generator)
        done = torch.zeros(1, B, device=device)
        with torch.no_grad():
            for _ in range(5):
                _, _, _, _, state = agent.get_action_and_value(x, state, done)
            sync(device)
            with profile(activities=activities) as prof:
                for _ in range(steps):
                    _, _, _, _, state = agent.get_action_and_value(x, state, done)
                sync(device)
        table = prof.key_averages().table(sort_by=sort_by, row_limit=top)
        n_ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / steps
        texts.append(f"## AGaLiTe eta={eta} r={r}, acting step at batch {B} ({steps} steps; {n_ops:.0f} aten op calls per step)\n{table}")
    return "\n".join(texts)


# ------------------------------------------------------------------------------------------ reporting
def ratio_table(rows, plan, n_obs=16, n_act=4):
    """Markdown: AGaLiTe at the paper's T-Maze setting against GTrXL-128 and GTrXL-256 (or the --quick refs)."""
    eta, r = plan["ref_agalite"]
    by = {}
    for row in rows:
        by.setdefault(row["config"], {})[row["batch"]] = row
    ag = by.get(f"AGaLiTe eta={eta} r={r}")
    labels = [f"GTrXL-{m}" for m in plan["ref_gtrxl"]] + [f"GTrXL-{m} KV" for m in plan["ref_gtrxl"]]
    refs = [(label, by[label]) for label in labels if label in by]
    if not ag or not refs:
        return "(no AGaLiTe / GTrXL pair to compare: a script is missing)\n"
    b0 = min(ag)
    metrics = [(f"time per step, batch {b} (ms, median)", "time_median_ms", b, "<= 0.60 (>= 40% cheaper)") for b in sorted(ag)]
    if ag[b0].get("compiled_time_median_ms") not in ("", None):
        metrics += [(f"compiled time per step, batch {b} (ms, median)", "compiled_time_median_ms", b, "<= 0.60 (>= 40% cheaper)") for b in sorted(ag)]
    metrics += [
        ("FLOPs per step per env, batch 1 (counted)", "flops_per_env_counted", b0, "<= 0.60 (>= 40% cheaper)"),
        ("state / cache bytes per env", "state_bytes_per_env", b0, "< 0.50 (> 50% smaller)"),
        (f"training peak memory, T={plan['train_T']} B={plan['train_B']} (bytes)", "train_peak_bytes", b0, "< 0.50 (> 50% smaller)"),
        ("training saved-for-backward bytes", "train_saved_bytes", b0, "< 0.50 (> 50% smaller)"),
        ("training forward+backward time (ms)", "train_step_ms", b0, "<= 0.60"),
        ("compiled training forward+backward time (ms)", "compiled_train_step_ms", b0, "<= 0.60"),
    ]
    head = f"| metric | AGaLiTe eta={eta} r={r} | " + " | ".join(f"{label} | ratio" for label, _ in refs) + " | claim |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, col, b, claim in metrics:
        a = ag[b].get(col)
        cells = [name, fmt(a)]
        for _, g in refs:
            v = g.get(b, {}).get(col)
            cells += [fmt(v), f"{a / v:.3f}" if isinstance(a, (int, float)) and isinstance(v, (int, float)) and v else "n/a"]
        lines.append("| " + " | ".join(cells + [claim]) + " |")
    return "\n".join(lines) + "\n"



def fmt(v):
    if v is None or v == "":
        return "n/a"
    if isinstance(v, float) and v < 1000:
        return f"{v:.4g}"
    return f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)


def main(args: Args):
    threads = torch.get_num_threads()
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # leave the process as it was (the tests call main in-process)


def run(args: Args):
    plan = QUICK if args.quick else FULL
    if args.batch_sizes:
        plan = dict(plan, batch_sizes=tuple(args.batch_sizes))
    if args.train_T:
        plan = dict(plan, train_T=args.train_T)
    if args.train_B:
        plan = dict(plan, train_B=args.train_B)
    if args.quick:
        args = dataclasses.replace(args, repeats=min(args.repeats, 5), min_repeats=min(args.min_repeats, 3), max_seconds=min(args.max_seconds, 0.2))
        args = dataclasses.replace(args, threads=args.threads or 1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    obs_space, act_space = tmaze_spaces()
    n_obs, n_act = int(np.prod(obs_space.shape)), int(act_space.n)

    modules = {}
    for name in args.models:
        module = load_script(name)
        if module is None:
            print(f"note: {SCRIPTS[name]} does not exist (yet): {name} skipped")
        else:
            modules[name] = module

    if args.profile or args.only_profile:
        if "agalite" not in modules:
            raise SystemExit("error: ppo_agalite.py is needed for the profile")
        text = profile_agalite(modules["agalite"], plan, obs_space, act_space, device)
        print(text)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + "_profile.txt", "w") as f:
            f.write(text)
        if args.only_profile:
            return None

    if "agalite" in modules:
        import agalite_kernels

        if args.fused_kernels:
            agalite_kernels.enable(device.type)
        else:
            agalite_kernels.disable(device.type)
        print(f"AGaLiTe's recurrences: {'fused kernels' if agalite_kernels.enabled(device.type) else 'torch loops'}")
    generator = torch.Generator().manual_seed(args.seed)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; FlopCounterMode counts {COUNTED_OPS} only")
    built = []  # one per config: the model, its sizes and its training-memory columns
    for model, label, sizes in configs(plan, modules, args.paper_only):
        agent, a = build(modules[model], sizes, obs_space, act_space, device, args.seed)
        train = dict(train_T="", train_B="", train_peak_bytes="", train_peak_method="", train_saved_bytes="", train_step_ms="",
                     compiled_train_step_ms="")
        if args.train_memory:
            peak, method, saved = training_memory(model, agent, n_obs, n_act, plan["train_T"], plan["train_B"], device, plan["warm_steps"], generator)
            train.update(train_T=plan["train_T"], train_B=plan["train_B"], train_peak_bytes=peak, train_peak_method=method, train_saved_bytes=saved)
            print(f"{label:>22} training T={plan['train_T']} B={plan['train_B']}: peak {peak / 2**20:.1f} MiB ({method}), "
                  f"saved for backward {saved / 2**20:.1f} MiB", flush=True)
        built.append(dict(model=model, label=label, agent=agent, args=a, module=modules[model], train=train,
                          n_params=sum(p.numel() for p in agent.parameters())))
    if args.train_memory:
        training_times(built, plan, n_obs, n_act, device, args, generator)
        for cfg in built:
            compiled = cfg["train"]["compiled_train_step_ms"]
            print(f"{cfg['label']:>22} training forward+backward {cfg['train']['train_step_ms']:.1f} ms"
                  + (f", compiled {compiled:.1f} ms" if compiled != "" else ""), flush=True)

    rows = {}
    for B in plan["batch_sizes"]:
        items = []
        for cfg in built:
            state = nontrivial_state(cfg["model"], cfg["agent"], B, n_obs, device, plan["warm_steps"], generator)
            flops, _ = count_flops(cfg["agent"], state, B, n_obs, device, generator)
            items.append(dict(cfg=cfg, agent=cfg["agent"], state=state, x=random_obs(1, B, n_obs, device, generator),
                              done=torch.zeros(1, B, device=device), flops=flops, state_bytes=state_bytes_per_env(state)))
        time_interleaved(items, device, args)
        if args.compile:
            mode = "reduce-overhead" if device.type == "cuda" else "default"
            compiled = []
            for item in items:
                torch._dynamo.reset()  # each config compiles afresh (no cache limits hit across the sweep)
                c = dict(item, act=torch.compile(modules[item["cfg"]["model"]].act, fullgraph=True, mode=mode))
                sync(device)
                t0 = time.perf_counter()
                with torch.no_grad():
                    for _ in range(3):
                        _step(c)
                sync(device)
                c["compile_s"] = time.perf_counter() - t0
                compiled.append(c)
            time_interleaved(compiled, device, args)
            for item, c in zip(items, compiled):
                q = quantiles(c["samples"])
                item["compiled"] = dict(compiled_time_median_ms=q["time_median_ms"], compiled_time_p10_ms=q["time_p10_ms"],
                                        compiled_time_p90_ms=q["time_p90_ms"], compile_s=c["compile_s"])
        for item in items:
            cfg, a, model, flops = item["cfg"], item["cfg"]["args"], item["cfg"]["model"], item["flops"]
            row = dict(
                model=model, config=cfg["label"], memory_len=getattr(a, "memory_len", ""), eta=getattr(a, "eta", ""),
                r=getattr(a, "r", ""), batch=B, n_params=cfg["n_params"], **quantiles(item["samples"]),
                time_repeats=len(item["samples"]), time_inner_steps=item["inner"], flops_counted=flops,
                flops_analytic=analytic_flops(model, a, B, n_obs, n_act), flops_per_env_counted=flops / B,
                elementwise_analytic=elementwise_estimate(model, a) or "", state_bytes_per_env=item["state_bytes"],
                state_bytes_analytic=analytic_state_bytes(model, a), **cfg["train"],
                **item.get("compiled", dict(compiled_time_median_ms="", compiled_time_p10_ms="", compiled_time_p90_ms="", compile_s="")), device=str(device),
                threads=torch.get_num_threads(), torch=torch.__version__,
            )
            rows[(cfg["label"], B)] = row
            compiled_text = f", compiled {row['compiled_time_median_ms']:.3f} ms" if "compiled" in item else ""
            print(f"{cfg['label']:>22} B={B:<4} {row['time_median_ms']:9.3f} ms [p10 {row['time_p10_ms']:.3f}, p90 {row['time_p90_ms']:.3f}]{compiled_text}"
                  f"  flops {flops:>14,} (analytic {row['flops_analytic']:,})  state {row['state_bytes_per_env']:>10,.0f} B/env"
                  f" (analytic {row['state_bytes_analytic']:,})", flush=True)
        del items
    rows = [rows[(cfg["label"], B)] for cfg in built for B in plan["batch_sizes"]]  # one config's rows together

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = ratio_table(rows, plan, n_obs, n_act)
    note = (f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads. FLOPs: FlopCounterMode, matmul-like "
            f"ops only ({COUNTED_OPS}). Training memory: {rows[0]['train_peak_method'] if rows and args.train_memory else 'not measured'}.\n")
    with open(args.out + ".md", "w") as f:
        f.write(table + "\n" + note)
    print("\n" + table + "\n" + note)
    print(f"wrote {args.out}.csv and {args.out}.md; figure: python plots/inference_cost_plot.py --csv {args.out}.csv")
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
