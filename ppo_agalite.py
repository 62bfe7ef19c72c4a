# PPO with AGaLiTe (Approximate Gated Linear Transformer, Pramanik, Elelimy, Machado & White, TMLR 2024)
# as the memory, in CleanRL's one-file style. `diff ppo_lstm.py ppo_agalite.py` shows the memory model and
# its sizes; the PPO loop is the same.
#
# AGaLiTe replaces self-attention by a gated linear-attention recurrence whose state has a fixed size,
# whatever the episode length, and approximates the outer-product state of the exact gated linear
# transformer with `r` cosine oscillators and a learned feature map of size `eta`. Names follow the paper
# (and shared/AGALITE.md): `eta`, `r`, `tilde_k`, `tilde_v`, `s`, `beta`, `gamma`; equation numbers in the
# comments refer to the paper's section 4 (AGaLiTe's recurrences).
#
# Recurrent PPO as the paper ran it: the memory state at the start of each training sequence is stored
# during the rollout, the state is zeroed when an episode starts (while acting and in the training
# forward), and each sequence (by default the whole rollout) is replayed from its stored state.
# Shapes: T = steps in a sequence, B = environments (or sequences) in a batch, k = action components.
import math
import os
import random
import signal
import time
from dataclasses import dataclass, fields
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

import envs as envs_lib


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be enabled when available"""
    threads: int = 1
    """torch's CPU threads (0: torch's default, all cores). 1: on T-Maze as fast as 2 threads on a 2-core machine,
    and runs side by side do not slow each other down; image observations train faster with all cores when the run
    has the machine to itself, but crawl when runs share it (measured: docs/speed.md, "Threads")"""
    compile: bool = False
    """compile the acting step, the minibatch loss and the optimizer step with torch.compile (on a GPU also CUDA
    graphs). Needs a C++ compiler on a CPU machine; the first update waits for the compilation (docs/speed.md: when it pays)"""
    cudagraphs: bool = True
    """with --compile on a GPU: replay CUDA graphs (torch.compile's reduce-overhead mode), not just fused kernels"""
    fused_kernels: bool = True
    """run AGaLiTe's recurrence operators as fused kernels (agalite_kernels.py): C++ on a CPU, Triton on a GPU; the
    same results to rounding. On by default: on a 2-core CPU T-Maze trains 1.4x faster (902 against 644 SPS eager,
    1124 against 808 with --compile; docs/speed.md), which repays the C++ build (once per machine, 70-90 s, then
    cached) within the first ~200k steps. Without a C++ compiler (or triton on a GPU) one line says so and the torch
    loops run; --no-fused-kernels: the loops"""
    async_envs: bool = False
    """step the environments in worker processes (gymnasium's AsyncVectorEnv) instead of one after the other in this
    one: pays for slow environments (Memory Maze: 1.8x with 8 envs on 2 cores); T-Maze and Memory Gym step faster
    than the processes exchange data (2-core machine: 0.3x and 0.6-0.7x; docs/environments.md, Speeds)"""
    capture_video: bool = False
    """whether to record videos of the evaluation episodes (image environments only; needs --save-model)"""
    save_model: bool = False
    """whether to save the model to `runs/{run_name}` and evaluate it at the end"""
    eval_episodes: int = 10
    """how many episodes the evaluation of the saved model runs"""
    checkpoint_every: int = 0
    """write runs/<run>/checkpoint.pt (model, optimizer, step, random states, arguments) every N PPO iterations and at
    the end (0: never). The file is replaced atomically, so a run killed at any moment leaves its last checkpoint whole.
    On SIGTERM (e.g. SLURM's preemption) a run finishes its update, writes one (if N > 0) and exits with status 143"""
    stop_at_success: float = 0.0
    """stop the run (a last checkpoint, then the end of training) once the mean success rate of the last 5 updates
    reaches this value (0: never; for tasks that report success, e.g. a memory-length sweep run until solved)"""
    resume: Optional[str] = None
    """continue the run in this directory (runs/<run>) from its checkpoint.pt, with the run's own arguments: same
    TensorBoard log, steps and learning-rate schedule; the environments start fresh episodes, the memory a zero state"""

    # Algorithm specific arguments
    env_id: str = "TMaze-v0"
    """the id of the environment (README, Environments: TMaze-v0, MysteryPath-*, MemoryMaze-*, Craftax-*)"""
    env_kwargs: str = "{}"
    """JSON object of keyword arguments for the environment, e.g. '{"corridor_length": 60}'"""
    total_timesteps: int = 300_000
    """total timesteps of the experiments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    adam_eps: float = 1e-8
    """eps of Adam: optax's default, which the authors' release used (CleanRL's 1e-5 slowed AGaLiTe's long memories)"""
    num_envs: int = 16
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    seq_len: int = 0
    """truncated-BPTT length of a training sequence (0 = the whole rollout, as the paper did)"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches (of whole sequences)"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""
    bootstrap_timeouts: bool = True
    """when a time limit ends an episode, bootstrap from the value of its final observation (--no-bootstrap-timeouts:
    treat the time-out as a terminal state, as the authors' release and CleanRL's ppo.py do)"""
    head_hidden: int = 0
    """hidden units of the actor and critic heads (0: one linear layer; 128: the release's Linear -> tanh -> Linear)"""
    actor_gain: float = 0.01
    """orthogonal-init gain of the actor's output layer (the release's T-Maze heads: 1.414, sqrt(2))"""
    critic_gain: float = 1.0
    """orthogonal-init gain of the critic's output layer (the release's T-Maze heads: 1.414, sqrt(2))"""
    head_activation: str = "tanh"
    """activation of the heads' hidden layer (with --head-hidden > 0): tanh or relu. The release's T-Maze and Mystery
    Path heads: tanh; its Craftax heads (purejaxrl's ppo_rnn.py): Dense(128) -> relu -> Dense"""
    head_hidden_gain: float = math.sqrt(2)
    """orthogonal-init gain of the heads' hidden layer (the release: sqrt(2) in its T-Maze and Mystery Path heads; 2 in
    its Craftax heads, whose output layers have gains 0.01, actor, and 1, critic)"""

    # Model specific arguments
    n_layers: int = 4
    """number of GRU-gated AGaLiTe blocks"""
    d_model: int = 128
    """width of the residual stream (the observation embedding and every block's output)"""
    n_heads: int = 4
    """attention heads per block (H)"""
    d_head: int = 64
    """size of each head's keys, queries and values (d)"""
    d_ffc: int = 128
    """hidden size of each block's feed-forward part"""
    eta: int = 4
    """size of the learned feature map (the paper's eta): keys and queries live in eta * d dimensions"""
    r: int = 2
    """number of cosine oscillators approximating the outer-product state (the paper's r)"""
    gru_bias: float = 2.0
    """initial bias b_g of the GRU gates (2: each block starts close to the identity map)"""
    gate_bias: float = 0.0
    """initial bias b of the forget gates' pre-activations beta, gamma and p3 (0: the release). Negative values start
    the gates nearly closed: a value state then keeps about exp(-L e^b) of what it was given L steps before, so
    b near -ln(L) starts a memory that lasts L steps (docs/tmaze_passive.md: L = 100 solved with -5; longer
    memories were solved at the bias where benchmarks/memory_reach.py's initial cue effect peaks: -3 at L = 200, -4
    from 400 to 1500)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


def check_args(args):
    """Fills the runtime fields; refuses a bad number or inconsistent sizes with a one-line message, before anything
    is built, instead of a traceback later."""

    def need(name, ok, rule):
        if not ok:
            raise ValueError(f"--{name.replace('_', '-')} ({getattr(args, name)}) must be {rule}")

    if args.capture_video and not args.save_model:
        raise ValueError("--capture-video records the evaluation of the saved model: use it with --save-model")
    for name, value in vars(args).items():
        need(name, not isinstance(value, float) or np.isfinite(value), "a finite number")
    need("seed", 0 <= args.seed < 2**32, "between 0 and 2**32 - 1")
    need("threads", args.threads >= 0, "0 (all cores) or a positive number")
    for name in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "eval_episodes"):
        need(name, getattr(args, name) >= 1, "at least 1")
    for name in ("learning_rate", "adam_eps", "clip_coef", "max_grad_norm"):  # adam_eps 0: 0/0 where a gradient is 0
        need(name, getattr(args, name) > 0, "positive")
    for name in ("ent_coef", "vf_coef"):
        need(name, getattr(args, name) >= 0, "0 or positive")
    for name in ("gamma", "gae_lambda"):
        need(name, 0 <= getattr(args, name) <= 1, "between 0 and 1")
    need("stop_at_success", 0 <= args.stop_at_success <= 1, "between 0 (never stop) and 1")
    need("target_kl", args.target_kl is None or args.target_kl > 0, "positive (or not given: no early stop)")
    need("seq_len", args.seq_len >= 0, "0 (the whole rollout) or a positive number")
    need("checkpoint_every", args.checkpoint_every >= 0, "0 (never) or a positive number")
    need("head_hidden", args.head_hidden >= 0, "0 (one linear layer) or a positive number of units")
    need("head_activation", args.head_activation in HEAD_ACTIVATIONS, f"one of {', '.join(HEAD_ACTIVATIONS)}")
    need("head_hidden_gain", args.head_hidden_gain > 0, "positive")
    for name in ("n_layers", "d_model", "n_heads", "d_head", "d_ffc", "eta", "r"):  # the memory model's sizes
        need(name, getattr(args, name) >= 1, "at least 1")
    args.seq_len = args.seq_len or args.num_steps
    if args.num_steps % args.seq_len:
        raise ValueError(f"--num-steps ({args.num_steps}) must be a multiple of --seq-len ({args.seq_len})")
    num_seqs = args.num_envs * (args.num_steps // args.seq_len)
    if num_seqs % args.num_minibatches:
        raise ValueError(f"--num-minibatches ({args.num_minibatches}) must divide the number of training sequences, num_envs * num_steps / seq_len = {num_seqs}")
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations < 1:
        raise ValueError(f"--total-timesteps ({args.total_timesteps}) is smaller than one rollout, num_envs * num_steps = {args.batch_size}")
    return args


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    if layer.bias is not None:
        torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def orthogonal_parts_(weight, sizes, std=np.sqrt(2)):
    """Initialises each block of rows of a fused weight (out_features, in_features) as its own orthogonal matrix
    (gain std), as if each part were a separate layer: the release's init. One orthogonal matrix over the fused
    rows would give each row a norm of about std * sqrt(in_features / out_features) instead of std."""
    with torch.no_grad():
        for part in weight.split(sizes, dim=0):
            torch.nn.init.orthogonal_(part, std)
    return weight


HEAD_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}  # --head-activation: the heads' hidden nonlinearity


def make_head(n_in, n_out, hidden, gain, activation="tanh", hidden_gain=math.sqrt(2)):
    """An actor or critic head: one linear layer (hidden = 0), or Linear(hidden) -> activation -> Linear: tanh with
    hidden gain sqrt(2) are the authors' release's T-Maze and Mystery Path heads, relu with gain 2 its Craftax heads.
    Orthogonal init, zero biases: the hidden layer with gain `hidden_gain`, the output with `gain`."""
    if not hidden:
        return layer_init(nn.Linear(n_in, n_out), std=gain)
    return nn.Sequential(layer_init(nn.Linear(n_in, hidden), std=hidden_gain), HEAD_ACTIVATIONS[activation](),
                         layer_init(nn.Linear(hidden, n_out), std=gain))


def outer(a, b):
    """(..., eta) x (..., d) -> (..., eta*d): AGaLiTe's feature maps, outer products with a learned eta-sized vector."""
    return (b.unsqueeze(-2) * a.unsqueeze(-1)).flatten(-2)  # (the larger operand first: a faster loop order on CPU)


def outer_backward(grad, a, b):
    """Gradients of outer(a, b) with respect to a (..., eta) and b (..., d), given grad (..., eta*d)."""
    grad = grad.unflatten(-1, (a.shape[-1], b.shape[-1]))  # (..., eta, d)
    return (grad * b.unsqueeze(-2)).sum(-1), (grad * a.unsqueeze(-1)).sum(-2)


def recurrence_(x, a, h):
    """The element-wise linear recurrence h_t = a_t * h_{t-1} + x_t over t = 0 .. T-1 from h_{-1} = h, in place:
    x (T, ...) holds the inputs x_t on entry and the states h_t on return; a (T, ...) broadcasts against x.

    A plain loop over time: only products of gates and sums are formed (nothing is divided by a cumulative
    product of gates, which vanishes when gates are near 0 or an episode starts), so it is the recurrence
    itself, and at these sizes a loop is faster than a parallel scan (one CPU thread, a (128, 8, 4, 3, 256)
    chunk: 2.9 ms, against 21.6 ms for a work-efficient scan).
    """
    for x_t, a_t in zip(x.unbind(0), a.unbind(0)):
        h = x_t.addcmul_(a_t, h)
    return x


def adjoint_(g, a, g_last):
    """The adjoint of recurrence_, backwards in time, in place: G_t = g_t + a_{t+1} G_{t+1}, with g (T, ...) holding
    dL/dh_t through the outputs at step t on entry and G_t = dL/dh_t (through all later steps too) on return;
    g_last: dL/dh_{T-1} through the state carried out of the chunk."""
    g[-1] += g_last
    g_t, a_t = g.unbind(0), a.unbind(0)
    for t in range(g.shape[0] - 2, -1, -1):
        g_t[t].addcmul_(a_t[t + 1], g_t[t + 1])
    return g


# The recurrences are custom operators (torch.library) with their own backward, not autograd through the loops
# (and agalite_kernels.py, with --fused-kernels, registers C++ and Triton versions of the same operators):
# - autograd would make one node per step (slow to run backwards) and keep every state for the backward;
# - torch.compile sees each operator as one opaque call: it would otherwise unroll the loops over time into its
#   graph (measured on AGaLiTe's T-Maze training step: 11 minutes of compilation, and a program slower than eager).


@torch.library.custom_op("agalite::linear_recurrence", mutates_args=())
def linear_recurrence(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """All states of h_t = a_t * h_{t-1} + x_t (recurrence_): a (T, ...) broadcasting against x (T, ...), h0 (...)."""
    return recurrence_(x.clone(), a, h0)


@torch.library.custom_op("agalite::linear_recurrence_backward", mutates_args=())
def linear_recurrence_backward(dh: torch.Tensor, a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor) -> list[torch.Tensor]:
    """The adjoint recurrence: dL/dx_t = G_t, dL/da_t = G_t h_{t-1} (summed over a's broadcast dims), dL/dh0 = a_0 G_0."""
    G = adjoint_(dh.clone(), a, torch.zeros_like(h0))
    da = torch.cat([G[:1] * h0, G[1:] * h[:-1]]).sum_to_size(a.shape)
    return [da, G, a[0] * G[0]]


@linear_recurrence.register_fake
def _(a, x, h0):
    return torch.empty_like(x)


@linear_recurrence_backward.register_fake
def _(dh, a, h, h0):
    return [torch.empty_like(a), torch.empty_like(h), torch.empty_like(h0)]


def _linear_recurrence_setup(ctx, inputs, output):
    a, x, h0 = inputs
    ctx.save_for_backward(a, output, h0)


def _linear_recurrence_grad(ctx, dh):
    return tuple(linear_recurrence_backward(dh, *ctx.saved_tensors))


linear_recurrence.register_autograd(_linear_recurrence_grad, setup_context=_linear_recurrence_setup)


def key_vectors(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep):
    """key_readout's eta*d-sized vectors from their factors: query_t, a_t = (1 - gamma_t) (1 - done_t), k'_t."""
    return outer(query_u, query_w), (1 - outer(gamma_u, gamma_w)) * keep, outer(k_u, k_w)


def key_states(a, k_in, c, h):
    """h_t[j] = a_t * h_{t-1}[j] + c_t[j] k'_t for the steps of one block, from the state h before it: (C, N, J, eta*d)."""
    return recurrence_(k_in.unsqueeze(-2) * c.unsqueeze(-1), a.unsqueeze(-2), h)  # inputs c_t[j] k'_t


@torch.library.custom_op("agalite::key_readout", mutates_args=())
def key_readout(
    query_u: torch.Tensor, query_w: torch.Tensor, gamma_u: torch.Tensor, gamma_w: torch.Tensor, k_u: torch.Tensor,
    k_w: torch.Tensor, keep: torch.Tensor, c: torch.Tensor, h0: torch.Tensor, block: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGaLiTe's key side over a chunk (shared/AGALITE.md section 1): the read-outs y_t[j] = <h_t[j], query_t> of
        h_t[j] = a_t * h_{t-1}[j] + c_t[j] k'_t,    a_t = (1 - gamma_t) (1 - done_t),
    where the rows j are tilde_k's r oscillators, c_t[j] = c_j(t), and one more row with c = 1, which is s.
    Every eta*d-sized vector here is an outer product of an eta-sized and a d-sized one:
        query_t = relu(p2) (x) relu(q),  gamma_t = sigmoid(p3) (x) sigmoid(gamma),
        k'_t = gamma_t * key_t = (sigmoid(p3) relu(p1)) (x) (sigmoid(gamma) relu(k)),
    and the operator takes those factors: query_u, gamma_u, k_u (T, N, eta) and query_w, gamma_w, k_w
    (T, N, d), with N any batch dims; keep = 1 - done (T, N, 1); c (T, N, J); h0 (N, J, eta*d)
    -> y (T, N, J), the last state h_{T-1} (N, J, eta*d), and the states at the starts of blocks of `block`
    steps (T / block, N, J, eta*d), kept for the backward.

    Why not autograd: it would keep, for the backward, the eta*d-sized query, gate and input of every step
    and all T states (T * J * eta*d floats per head and layer): AGaLiTe's training memory was 4 times
    GTrXL-128's at T-Maze sizes. The outputs need only the read-outs, so only the factors and the block
    starts are kept, and the backward (key_readout_backward) rebuilds one block of vectors and states at a time.
    Blocks of 8 steps: a block's states (8 x N x J x eta*d floats, 0.8 MB at T-Maze sizes) then stay in a CPU
    core's cache; forward + backward at T = 128, N = 8 x 4 heads took 16 ms per layer on one thread, against 22 ms
    with blocks of 32, for 1.5 MB of kept block starts per layer instead of 0.4 MB.
    """
    ys, starts, h = [], [], h0
    for s in range(0, c.shape[0], block):
        query, a, k_in = key_vectors(*(f[s : s + block] for f in (query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep)))
        states = key_states(a, k_in, c[s : s + block], h)
        ys.append((states * query.unsqueeze(-2)).sum(-1))
        starts.append(h)
        h = states[-1].clone()  # (a copy: a view would keep the whole block's states alive)
    return torch.cat(ys), h, torch.stack(starts)


@torch.library.custom_op("agalite::key_readout_backward", mutates_args=())
def key_readout_backward(
    dy: torch.Tensor, dh_last: torch.Tensor, query_u: torch.Tensor, query_w: torch.Tensor, gamma_u: torch.Tensor,
    gamma_w: torch.Tensor, k_u: torch.Tensor, k_w: torch.Tensor, keep: torch.Tensor, c: torch.Tensor,
    starts: torch.Tensor, block: int,
) -> list[torch.Tensor]:
    """Gradients of key_readout with respect to its six factors and h0. Block by block from the last: rebuild
    the block's vectors and states from its start, then run the adjoint recurrence backwards in time,
        G_t = dL/dh_t = dy_t[j] query_t + a_{t+1} G_{t+1}   (G_{T-1} also gets dL/dh_{T-1}),
        dL/dquery_t = sum_j dy_t[j] h_t[j],  dL/dk'_t = sum_j c_t[j] G_t[j],  dL/da_t = sum_j G_t[j] h_{t-1}[j],
        dL/dh0 = a_0 G_0,  and the factors' gradients through the outer products (outer_backward)."""
    factors = (query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep)
    c, dy = c.contiguous(), dy.contiguous()  # (bmm on broadcast views falls back to a slow loop)
    grads = [torch.empty_like(f) for f in factors[:6]]
    carry = dh_last  # dL/dh at the end of the block, from the steps after it
    for i in reversed(range(starts.shape[0])):
        s, e = i * block, min((i + 1) * block, c.shape[0])
        query, a, k_in = key_vectors(*(f[s:e] for f in factors))
        h = key_states(a, k_in, c[s:e], starts[i])  # recomputed, (C, N, J, eta*d)
        G = adjoint_(query.unsqueeze(-2) * dy[s:e].unsqueeze(-1), a.unsqueeze(-2), carry)  # dL/dh_t
        d_query = (dy[s:e].unsqueeze(-2) @ h).squeeze(-2)
        d_a = torch.cat([(G[:1] * starts[i]).sum(-2), (G[1:] * h[:-1]).sum(-2)])  # sum_j G_t[j] h_{t-1}[j]
        d_gamma = -keep[s:e] * d_a  # a = (1 - gamma) * keep
        d_k_in = (c[s:e].unsqueeze(-2) @ G).squeeze(-2)
        carry = a[0].unsqueeze(-2) * G[0]  # dL/dh_{s-1}
        for u, grad in [(0, d_query), (2, d_gamma), (4, d_k_in)]:
            grads[u][s:e], grads[u + 1][s:e] = outer_backward(grad, factors[u][s:e], factors[u + 1][s:e])
    return grads + [carry]


@key_readout.register_fake
def _(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, h0, block=8):
    n_blocks = (c.shape[0] + block - 1) // block
    return c.new_empty(c.shape), h0.new_empty(h0.shape), h0.new_empty((n_blocks,) + h0.shape)


@key_readout_backward.register_fake
def _(dy, dh_last, query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, starts, block):
    return [torch.empty_like(f) for f in (query_u, query_w, gamma_u, gamma_w, k_u, k_w, dh_last)]


def _key_readout_setup(ctx, inputs, output):
    ctx.block = inputs[-1]
    ctx.save_for_backward(*inputs[:8], output[2])  # the factors, keep, c and the block starts


def _key_readout_grad(ctx, dy, dh_last, _):
    *grads, dh0 = key_readout_backward(dy, dh_last, *ctx.saved_tensors, ctx.block)
    return (*grads, None, None, dh0, None)


key_readout.register_autograd(_key_readout_grad, setup_context=_key_readout_setup)


class AGaLiTeAttention(nn.Module):
    """One AGaLiTe attention layer (shared/AGALITE.md section 1). Per head, a state of fixed size:
    tilde_k (r, eta*d), tilde_v (r, d), s (eta*d): r*d + r*eta*d + eta*d floats, whatever the context length.
    """

    def __init__(self, d_model, n_heads, d_head, eta, r, gate_bias=0.0, eps=1e-5):
        super().__init__()
        self.n_heads, self.d_head, self.eta, self.r, self.eps = n_heads, d_head, eta, r, eps
        # one linear map gives, per head, k, q, v, beta, gamma (each d) and p1, p2, p3 (each eta); initialised as the
        # release's two layers: k, q, v, beta, gamma of all heads one orthogonal matrix, p1, p2, p3 another (one
        # orthogonal matrix over all rows would start the p rows about 3x smaller, as they are few)
        self.proj = nn.Linear(d_model, n_heads * (5 * d_head + 3 * eta))
        nn.init.zeros_(self.proj.bias)
        bias = self.proj.bias.detach().view(n_heads, 5 * d_head + 3 * eta)
        bias[:, 3 * d_head : 5 * d_head] = gate_bias  # beta, gamma
        bias[:, 5 * d_head + 2 * eta :] = gate_bias  # p3
        per_head = self.proj.weight.detach().view(n_heads, 5 * d_head + 3 * eta, d_model)
        for part in (per_head[:, : 5 * d_head], per_head[:, 5 * d_head :]):
            part.copy_(nn.init.orthogonal_(torch.empty(part.shape[0] * part.shape[1], d_model), np.sqrt(2)).view(part.shape))
        self.out = layer_init(nn.Linear(n_heads * d_head, d_model))  # heads concatenated, back to d_model

    def forward(self, x, state, keep, cos):
        """x: (T, B, d_model), state: (tilde_k, tilde_v, s) of the step before x[0], keep: (T, B) 0.0 where
        x[t] starts an episode, cos: (T, B, r) the oscillators c_j(t) -> (T, B, d_model), state after x[-1]."""
        T, B, _ = x.shape
        H, d, eta, r = self.n_heads, self.d_head, self.eta, self.r
        k, q, v, beta, gamma, p1, p2, p3 = self.proj(x).view(T, B, H, -1).split([d, d, d, d, d, eta, eta, eta], dim=-1)
        keep = keep.view(T, B, 1, 1)
        c = torch.cat([cos, torch.ones_like(cos[..., :1])], dim=-1).unsqueeze(2).expand(T, B, H, r + 1)
        tilde_k0, tilde_v0, s0 = state

        # The recurrences, with the state forgotten where an episode starts (the (1 - done_t) factor):
        #   tilde_v_t[j] = (1 - beta_t)  (1 - done_t) tilde_v_{t-1}[j] + c_j(t) v'_t,    v'_t = beta_t * v_t
        #   tilde_k_t[j] = (1 - gamma_t) (1 - done_t) tilde_k_{t-1}[j] + c_j(t) k'_t,    k'_t = gamma_t * key_t
        #   s_t          = (1 - gamma_t) (1 - done_t) s_{t-1}          + k'_t
        # and the output a_t = sum_j tilde_v_t[j] <tilde_k_t[j], query_t> / (2 r <s_t, query_t> + eps).
        # Key side (eta*d-sized): only the read-outs with the query leave key_readout, computed from the eta-
        # and d-sized factors of the feature maps; tilde_k and s run together as r + 1 rows (c = 1 for s).
        # Value side (d-sized): all states of tilde_v. Acting (T = 1) runs the step itself instead, as written
        # above: no custom operator, so that a compiled acting step fuses it.
        gamma_p, gamma_d = torch.sigmoid(p3), torch.sigmoid(gamma)
        factors = (torch.relu(p2), torch.relu(q), gamma_p, gamma_d, gamma_p * torch.relu(p1), gamma_d * torch.relu(k), keep)
        h0 = torch.cat([tilde_k0, s0.unsqueeze(-2)], dim=-2)  # (B, H, r + 1, eta*d)
        beta = torch.sigmoid(beta)  # (T, B, H, d) forget gate of values
        # (v is copied out of the projection so that the backward keeps v, not the whole projection output)
        v_in = c[..., :r, None] * (beta * v.contiguous()).unsqueeze(-2)  # c_j(t) v'_t (T, B, H, r, d)
        decay_v = ((1 - beta) * keep).unsqueeze(-2)  # (T, B, H, 1, d)
        if T == 1:  # written out: recurrence_'s in-place loop is for the operators, where autograd does not see it
            query, decay_k, k_in = key_vectors(*factors)  # (1, B, H, eta*d) each
            last_k = decay_k[0].unsqueeze(-2) * h0 + c[0].unsqueeze(-1) * k_in[0].unsqueeze(-2)  # (B, H, r + 1, eta*d)
            reads = (last_k * query[0].unsqueeze(-2)).sum(-1).unsqueeze(0)  # (1, B, H, r + 1)
            tilde_v = decay_v * tilde_v0 + v_in  # (1, B, H, r, d)
        else:
            reads, last_k, _ = key_readout(*factors, c.contiguous(), h0)
            tilde_v = linear_recurrence(decay_v, v_in, tilde_v0)  # (T, B, H, r, d)
        scores, s_query = reads.split([r, 1], dim=-1)  # (T, B, H, r), (T, B, H, 1)

        numerator = (tilde_v * scores.unsqueeze(-1)).sum(-2)  # (T, B, H, d)
        attn = (numerator / (2 * r * s_query + self.eps)).flatten(-2)  # (T, B, H*d)
        return self.out(attn), (last_k[..., :r, :], tilde_v[-1], last_k[..., r, :])


class GRUGate(nn.Module):
    """Parisotto et al. (2019) gating of a residual x by an update y; starts near the identity (bias b_g)."""

    def __init__(self, d_model, bias):
        super().__init__()
        self.w = nn.Linear(d_model, 3 * d_model, bias=False)  # W_r, W_z, W_g applied to y
        self.u = nn.Linear(d_model, 2 * d_model, bias=False)  # U_r, U_z applied to x
        self.u_g = layer_init(nn.Linear(d_model, d_model, bias=False))  # U_g applied to r * x
        orthogonal_parts_(self.w.weight, [d_model] * 3)  # each of the six matrices its own orthogonal one
        orthogonal_parts_(self.u.weight, [d_model] * 2)
        self.b_g = nn.Parameter(torch.full((d_model,), float(bias)))

    def forward(self, x, y):
        w_r, w_z, w_g = self.w(y).chunk(3, dim=-1)
        u_r, u_z = self.u(x).chunk(2, dim=-1)
        r = torch.sigmoid(w_r + u_r)
        z = torch.sigmoid(w_z + u_z - self.b_g)
        h = torch.tanh(w_g + self.u_g(r * x))
        return (1 - z) * x + z * h


class AGaLiTeBlock(nn.Module):
    """GRU-gated pre-LayerNorm block around the attention (shared/AGALITE.md section 3)."""

    def __init__(self, args):
        super().__init__()
        self.ln1 = nn.LayerNorm(args.d_model)
        self.attention = AGaLiTeAttention(args.d_model, args.n_heads, args.d_head, args.eta, args.r, args.gate_bias)
        self.gate1 = GRUGate(args.d_model, args.gru_bias)
        self.ln2 = nn.LayerNorm(args.d_model)
        self.ffc = nn.Sequential(
            layer_init(nn.Linear(args.d_model, args.d_ffc)), nn.ReLU(),
            layer_init(nn.Linear(args.d_ffc, args.d_model)), nn.ReLU(),
        )
        self.gate2 = GRUGate(args.d_model, args.gru_bias)

    def forward(self, x, state, keep, cos):
        a, state = self.attention(self.ln1(x), state, keep, cos)
        x = self.gate1(x, torch.relu(a))
        return self.gate2(x, self.ffc(self.ln2(x))), state


class Agent(nn.Module):
    """Encoder -> Linear(d_model) + ReLU -> n_layers AGaLiTe blocks -> actor and critic heads.

    Memory state: a tuple of tensors, each with the batch in dim 1 (the PPO loop selects sequences with
    `s[:, idx]`): tilde_k (L, B, H, r, eta*d), tilde_v (L, B, H, r, d), s (L, B, H, eta*d), and tick (1, B),
    the oscillators' step counter shared by the layers.
    """

    def __init__(self, observation_space, action_space, args):
        super().__init__()
        sizes = {name: getattr(args, name) for name in ["n_layers", "d_model", "n_heads", "d_head", "d_ffc", "eta", "r"]}
        bad = {name: value for name, value in sizes.items() if value < 1}
        if bad:
            raise ValueError(f"AGaLiTe sizes must be positive integers, got {bad}")
        self.nvec = envs_lib.action_nvec(action_space)
        self.encoder, n_features = envs_lib.make_encoder(observation_space)
        self.embed = nn.Sequential(layer_init(nn.Linear(n_features, args.d_model)), nn.ReLU())
        self.layers = nn.ModuleList([AGaLiTeBlock(args) for _ in range(args.n_layers)])
        self.actor = make_head(args.d_model, sum(self.nvec), args.head_hidden, args.actor_gain, args.head_activation, args.head_hidden_gain)
        self.critic = make_head(args.d_model, 1, args.head_hidden, args.critic_gain, args.head_activation, args.head_hidden_gain)
        self.state_shapes = [
            (args.n_heads, args.r, args.eta * args.d_head),  # tilde_k
            (args.n_heads, args.r, args.d_head),  # tilde_v
            (args.n_heads, args.eta * args.d_head),  # s
        ]
        # Oscillator frequencies omega_j = linspace(-pi, pi, r)[j]. The release counts `tick` up from 1 for
        # ever as a float; in float32 cos(omega * tick) loses its accuracy once tick is large (millions of
        # steps). Every omega_j * 2(r-1) is a multiple of 2*pi, so cos(omega_j * tick) has period 2(r-1)
        # (2 when r = 1) and we keep tick as an integer modulo that period: the same cosines, exact forever.
        self.register_buffer("omega", torch.linspace(-math.pi, math.pi, args.r))
        self.period = 2 * max(args.r - 1, 1)

    def initial_state(self, batch_size, device):
        n_layers = len(self.layers)
        state = tuple(torch.zeros((n_layers, batch_size) + shape, device=device) for shape in self.state_shapes)
        # the tick starts at 1, as in the release (so the first step sees tick 2); it is not reset at episode starts
        return state + (torch.full((1, batch_size), 1 % self.period, dtype=torch.long, device=device),)

    def memory(self, x, state, done):
        """x: (T, B, *obs_shape), done: (T, B) 1.0 where x[t] starts an episode -> (T, B, d_model), new state.
        T = 1 is one acting step (constant cost); T > 1 runs a training chunk through the recurrence operators."""
        T, B = done.shape
        hidden = self.embed(self.encoder(x.flatten(0, 1))).view(T, B, -1)  # (T, B, d_model)
        tilde_k, tilde_v, s, tick = state
        ticks = (tick + torch.arange(1, T + 1, device=done.device).unsqueeze(1)) % self.period  # (T, B)
        cos = torch.cos(ticks.unsqueeze(-1) * self.omega)  # (T, B, r)
        keep = 1.0 - done
        new_states = []
        for layer, layer_state in zip(self.layers, zip(tilde_k, tilde_v, s)):
            hidden, layer_state = layer(hidden, layer_state, keep, cos)
            new_states.append(layer_state)
        return hidden, tuple(torch.stack(parts) for parts in zip(*new_states)) + (ticks[-1:],)

    def get_value(self, x, state, done):
        return self.critic(self.memory(x, state, done)[0]).squeeze(-1)  # (T, B)

    def get_action_and_value(self, x, state, done, action=None):
        """Returns action (T, B, k), log-prob (T, B), entropy (T, B), value (T, B), new state."""
        hidden, state = self.memory(x, state, done)
        dists = [Categorical(logits=logits) for logits in self.actor(hidden).split(self.nvec, dim=-1)]
        if action is None:
            action = torch.stack([dist.sample() for dist in dists], dim=-1)
        logprob = sum(dist.log_prob(a) for dist, a in zip(dists, action.unbind(-1)))
        entropy = sum(dist.entropy() for dist in dists)
        return action, logprob, entropy, self.critic(hidden).squeeze(-1), state


# Options that may differ between a run and its resumption: they change where and how fast it runs, not what it computes.
RUN_OPTIONS = ("resume", "checkpoint_every", "cuda", "threads", "compile", "cudagraphs", "fused_kernels", "async_envs", "capture_video", "save_model", "eval_episodes", "stop_at_success")


def save_checkpoint(path, agent, optimizer, iteration, global_step, args):
    """Everything a run needs to continue after `iteration`; written to a temporary file and then renamed over the
    old checkpoint (os.replace is atomic), so that an interrupted write never leaves a broken checkpoint."""
    checkpoint = {
        "script": os.path.basename(__file__),
        "args": vars(args),
        "iteration": iteration,
        "global_step": global_step,
        "model": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    }
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(run_dir, args):
    """The checkpoint of `run_dir`, after checking that this script and these arguments wrote it."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.isfile(path):
        raise ValueError(f"--resume {run_dir}: there is no {path} (a run writes one with --checkpoint-every N)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own file: it holds numpy states
    except Exception as e:
        raise ValueError(f"--resume {run_dir}: {path} cannot be read ({e})") from None
    script = os.path.basename(__file__)
    if checkpoint.get("script") != script:
        raise ValueError(f"--resume {run_dir}: its checkpoint was written by {checkpoint.get('script')}, not {script}")
    # an option the checkpoint lacks is newer than the run, which computed with the option's default: compare that
    saved = {field.name: field.default for field in fields(Args)} | checkpoint["args"]
    differ = [f"--{k.replace('_', '-')} {saved[k]} (this command: {getattr(args, k, None)})" for k in saved if k not in RUN_OPTIONS and getattr(args, k, None) != saved[k]]
    if differ:
        raise ValueError(f"--resume {run_dir}: the run was started with other arguments: {'; '.join(differ)}. Resume it with its own arguments")
    return checkpoint


def env_action(action, action_space):
    """(B, k) tensor -> what the vector env takes: (B,) for Discrete, (B, k) for MultiDiscrete."""
    action = action.cpu().numpy()
    return action[:, 0] if isinstance(action_space, gym.spaces.Discrete) else action


def evaluate(model_path, eval_episodes, device, capture_video=False, run_name="eval"):
    """Runs the saved policy (sampling actions) until `eval_episodes` episodes end; returns returns and successes."""
    checkpoint = torch.load(model_path, map_location=device)
    args = Args(**checkpoint["args"])
    envs = envs_lib.make_envs(args.env_id, 1, args.seed + 10_000, args.env_kwargs, capture_video, run_name)
    agent = Agent(envs.single_observation_space, envs.single_action_space, args).to(device)
    agent.load_state_dict(checkpoint["model"])
    agent.eval()
    obs, _ = envs.reset(seed=args.seed + 10_000)
    obs = torch.as_tensor(obs, device=device)
    done = torch.ones(1, device=device)
    state = agent.initial_state(1, device)
    episodic_returns, successes = [], []
    while len(episodic_returns) < eval_episodes:
        with torch.no_grad():
            action, _, _, _, state = agent.get_action_and_value(obs[None], state, done[None])
        obs, _, terminations, truncations, infos = envs.step(env_action(action[0], envs.single_action_space))
        obs = torch.as_tensor(obs, device=device)
        done = torch.as_tensor(np.logical_or(terminations, truncations), dtype=torch.float32, device=device)
        for info in infos.get("final_info", []):
            if info and "episode" in info:
                episodic_returns.append(float(info["episode"]["r"][0]))
                if "success" in info:
                    successes.append(float(info["success"]))
    envs.close()
    return episodic_returns, successes


def act(agent, obs, state, done):
    """One acting step (T = 1): obs (B, *obs_shape), done (B,) -> action (B, k), log-prob (B,), value (B,), state."""
    action, logprob, _, value, state = agent.get_action_and_value(obs[None], state, done[None])
    return action[0], logprob[0], value[0], state


def gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda):
    """Generalized advantage estimation over a rollout: rewards, values, dones (num_steps, num_envs), where dones[t]
    = 1 when obs[t] starts an episode; next_value, next_done (num_envs,) for the step after the rollout. Returns the
    advantages and the lambda-returns (advantages + values), the trace cut at every episode end."""
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(rewards.shape[0])):
        if t == rewards.shape[0] - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


def ppo_loss(agent, args, obs, state, dones, actions, logprobs, advantages, returns, values):
    """The PPO loss of a minibatch of whole sequences (each input (seq_len, n, ...); state: their start states)
    -> loss, and its parts and diagnostics stacked: policy loss, value loss, entropy, old and new approx. KL, clipfrac."""
    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(obs, state, dones, actions)
    logratio = newlogprob.flatten() - logprobs.flatten()
    ratio = logratio.exp()

    with torch.no_grad():
        # calculate approx_kl http://joschu.net/blog/kl-approx.html
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

    mb_advantages = advantages.flatten()
    if args.norm_adv:
        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

    # Policy loss
    pg_loss1 = -mb_advantages * ratio
    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss
    newvalue = newvalue.flatten()
    mb_returns, mb_values = returns.flatten(), values.flatten()
    if args.clip_vloss:
        v_loss_unclipped = (newvalue - mb_returns) ** 2
        v_clipped = mb_values + torch.clamp(newvalue - mb_values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - mb_returns) ** 2
        v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
        v_loss = 0.5 * v_loss_max.mean()
    else:
        v_loss = 0.5 * ((newvalue - mb_returns) ** 2).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, torch.stack([pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac]).detach()


if __name__ == "__main__":
    try:
        args = check_args(tyro.cli(Args))  # a bad number stops here, before anything is seeded or built
    except ValueError as e:
        raise SystemExit(f"error: {e}")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup; bad input (env id, env kwargs, spaces, sizes) stops here with a message, not a traceback
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.fused_kernels:  # optional accelerator: the custom operators above, as C++ (CPU) or Triton (GPU)
            import agalite_kernels

            agalite_kernels.enable(device.type)
        envs = envs_lib.make_envs(args.env_id, args.num_envs, args.seed, args.env_kwargs, False, "train", args.async_envs)
        agent = Agent(envs.single_observation_space, envs.single_action_space, args).to(device)
        checkpoint = load_checkpoint(args.resume, args) if args.resume else None
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    # the learning rate is a tensor, so that annealing it does not make a compiled optimizer step recompile
    lr = torch.tensor(args.learning_rate, device=device)
    cudagraphs = args.compile and args.cudagraphs and device.type == "cuda"
    optimizer = optim.Adam(agent.parameters(), lr=lr, eps=args.adam_eps, capturable=cudagraphs)
    start_iteration, global_step = 0, 0
    if checkpoint:
        agent.load_state_dict(checkpoint["model"])
        for group in checkpoint["optimizer"]["param_groups"]:
            group["capturable"] = cudagraphs  # a run may resume on another device (a GPU run on a CPU, or back)
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = lr  # loading replaced it by a copy: keep the tensor that annealing fills
        start_iteration, global_step = checkpoint["iteration"], checkpoint["global_step"]
        random.setstate(checkpoint["rng"]["python"])
        np.random.set_state(checkpoint["rng"]["numpy"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and checkpoint["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])

    def optimizer_step():
        nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        optimizer.step()

    policy_step, loss_fn = act, ppo_loss
    if args.compile:
        # static shapes throughout (one rollout step, one minibatch); on a GPU also CUDA graphs (reduce-overhead)
        mode = "reduce-overhead" if cudagraphs else "default"
        policy_step = torch.compile(act, fullgraph=True, mode=mode)
        loss_fn = torch.compile(ppo_loss, fullgraph=True, mode=mode)
        optimizer_step = torch.compile(optimizer_step, mode=mode)  # (optimizer.step() breaks the graph on purpose)
    if cudagraphs:
        # A CUDA graph overwrites its outputs at its next replay: every call starts a new cudagraph step, and the
        # acting step's state, which is fed back, is kept in a copy of its own.
        compiled_act, compiled_loss = policy_step, loss_fn

        def policy_step(*inputs):
            torch.compiler.cudagraph_mark_step_begin()
            action, logprob, value, state = compiled_act(*inputs)
            return action, logprob, value, tuple(s.clone() for s in state)

        def loss_fn(*inputs):
            torch.compiler.cudagraph_mark_step_begin()
            return compiled_loss(*inputs)

    run_dir = args.resume or f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = os.path.basename(os.path.normpath(run_dir))
    # on resumption, TensorBoard hides what the run logged after its checkpoint (purge_step): no step is logged twice
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
    print(f"{run_name}: {args.num_envs} x {args.env_id} on {device}" + (f", resumed at step {global_step}" if checkpoint else ""), flush=True)
    if not checkpoint:
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
        )

    # ALGO Logic: Storage setup
    obs_space = envs.single_observation_space
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_space.shape, dtype=torch.as_tensor(obs_space.sample()).dtype, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs, len(agent.nvec)), dtype=torch.long, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)  # 1.0 where obs[t] starts an episode
    values = torch.zeros((args.num_steps, args.num_envs), device=device)
    num_chunks = args.num_steps // args.seq_len  # training sequences per environment
    num_seqs = args.num_envs * num_chunks

    def to_sequences(x):
        """(num_steps, num_envs, ...) -> (seq_len, num_seqs, ...); sequence index = chunk * num_envs + env."""
        x = x.reshape((num_chunks, args.seq_len) + x.shape[1:]).transpose(0, 1)
        return x.reshape((args.seq_len, num_seqs) + x.shape[3:])

    # TRY NOT TO MODIFY: start the game
    start_step, start_time = global_step, time.time()
    last_print = 0.0
    next_obs, _ = envs.reset(seed=args.seed + global_step)  # a resumed run starts fresh episodes, with new seeds
    next_obs = torch.as_tensor(next_obs, device=device)
    next_done = torch.ones(args.num_envs, device=device)  # the first observation starts an episode
    next_state = agent.initial_state(args.num_envs, device)

    success_history = []  # mean success rate of each update (for --stop-at-success)
    # SIGTERM (SLURM's preemption, a machine's shutdown): finish the update under way, checkpoint, exit with 143.
    # Set after the environments are made: memory-gym's pygame (SDL) catches SIGTERM and ignores it otherwise
    terminated = []
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    for iteration in range(start_iteration + 1, args.num_iterations + 1):
        initial_states = []  # memory state at the start of each training sequence (stored, as the paper does)
        episodic_returns, episodic_lengths, successes, achievements, achievement_flags = [], [], [], [], []
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            lrnow = frac * args.learning_rate
            lr.fill_(lrnow)

        for step in range(0, args.num_steps):
            if step % args.seq_len == 0:
                initial_states.append(next_state)
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done

            # ALGO LOGIC: action logic (one step: T = 1)
            with torch.no_grad():
                action, logprob, value, next_state = policy_step(agent, next_obs, next_state, next_done)
                values[step] = value
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs, reward, terminations, truncations, infos = envs.step(env_action(action, envs.single_action_space))
            next_obs = torch.as_tensor(next_obs, device=device)
            reward = torch.as_tensor(reward, dtype=torch.float32, device=device)
            truncated = torch.as_tensor(truncations, device=device)
            next_done = torch.as_tensor(np.logical_or(terminations, truncations), dtype=torch.float32, device=device)
            if args.bootstrap_timeouts and truncated.any():
                # A time limit is not a terminal state: bootstrap with the value of the final observation,
                # seen from the memory state before the reset (the returned next_obs already starts a new episode).
                final_obs = next_obs.clone()
                for i in torch.nonzero(truncated).flatten().tolist():
                    final_obs[i] = torch.as_tensor(infos["final_observation"][i], device=device)
                with torch.no_grad():
                    final_value = agent.get_value(final_obs[None], next_state, torch.zeros_like(next_done)[None])[0]
                reward = reward + args.gamma * final_value * truncated
            rewards[step] = reward

            for info in infos.get("final_info", []):
                if info and "episode" in info:
                    episodic_returns.append(float(info["episode"]["r"][0]))
                    episodic_lengths.append(float(info["episode"]["l"][0]))
                    if "success" in info:
                        successes.append(float(info["success"]))
                    if "achievements" in info:  # Craftax: share of the achievements unlocked in the episode
                        achievements.append(float(info["achievements"]))
                        achievement_flags.append(info["achievement_flags"])  # (n_achievements,) 0/1: which ones

        if episodic_returns:
            writer.add_scalar("charts/episodic_return", np.mean(episodic_returns), global_step)
            writer.add_scalar("charts/episodic_length", np.mean(episodic_lengths), global_step)
        if successes:
            writer.add_scalar("charts/success_rate", np.mean(successes), global_step)
            success_history.append(np.mean(successes))
        if achievements:
            writer.add_scalar("charts/achievements", np.mean(achievements), global_step)
            # each achievement's success rate: the share of those episodes that unlocked it (the Craftax paper's table)
            for name, rate in zip(envs_lib.craftax.achievement_names(args.env_id), np.mean(achievement_flags, axis=0)):
                writer.add_scalar(f"achievements/{name}", rate, global_step)

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs[None], next_state, next_done[None])[0]
            advantages, returns = gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)

        # cut the rollout into sequences: (seq_len, num_seqs, ...), and their stored start states
        b_obs = to_sequences(obs)
        b_logprobs = to_sequences(logprobs)
        b_actions = to_sequences(actions)
        b_dones = to_sequences(dones)
        b_advantages = to_sequences(advantages)
        b_returns = to_sequences(returns)
        b_values = to_sequences(values)
        b_initial_state = tuple(torch.cat(parts, dim=1) for parts in zip(*initial_states))

        # Optimizing the policy and value network over minibatches of whole sequences
        seqs_per_minibatch = num_seqs // args.num_minibatches
        seq_inds = np.arange(num_seqs)
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(seq_inds)
            for start in range(0, num_seqs, seqs_per_minibatch):
                mb = seq_inds[start : start + seqs_per_minibatch]
                mb_state = tuple(s[:, mb] for s in b_initial_state)
                loss, stats = loss_fn(agent, args, b_obs[:, mb], mb_state, b_dones[:, mb], b_actions[:, mb], b_logprobs[:, mb], b_advantages[:, mb], b_returns[:, mb], b_values[:, mb])
                pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac = stats.tolist()
                clipfracs.append(clipfrac)
                if not torch.isfinite(loss):
                    # stop before the non-finite gradient reaches the weights; the last checkpoint stays as it was
                    writer.close()
                    envs.close()
                    saved = f"its last checkpoint is in {run_dir}" if args.checkpoint_every else "it wrote no checkpoint"
                    raise SystemExit(f"error: the loss is {loss.item()} at iteration {iteration} (step {global_step}); the run stops ({saved})")

                optimizer.zero_grad()
                loss.backward()
                optimizer_step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.flatten().cpu().numpy(), b_returns.flatten().cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        sps = int((global_step - start_step) / (time.time() - start_time))
        writer.add_scalar("charts/learning_rate", lr.item(), global_step)
        writer.add_scalar("losses/value_loss", v_loss, global_step)
        writer.add_scalar("losses/policy_loss", pg_loss, global_step)
        writer.add_scalar("losses/entropy", entropy_loss, global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl, global_step)
        writer.add_scalar("losses/approx_kl", approx_kl, global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        if time.time() - last_print > 5 or iteration == args.num_iterations:
            last_print = time.time()
            eta = (args.total_timesteps - global_step) / max(sps, 1)
            recent = f"return {np.mean(episodic_returns):7.2f}" if episodic_returns else "return     n/a"
            recent += f" | success {np.mean(successes):.2f}" if successes else ""
            print(f"step {global_step:>9}/{args.num_iterations * args.batch_size} | {recent} | SPS {sps} | ETA {eta / 60:.1f} min", flush=True)
        solved = args.stop_at_success > 0 and len(success_history) >= 5 and np.mean(success_history[-5:]) >= args.stop_at_success
        if args.checkpoint_every and (iteration % args.checkpoint_every == 0 or iteration == args.num_iterations or solved or terminated):
            writer.flush()  # the logged steps up to the checkpoint are on disk before it is
            save_checkpoint(os.path.join(run_dir, "checkpoint.pt"), agent, optimizer, iteration, global_step, args)
        if terminated and not (solved or iteration == args.num_iterations):
            saved = f"checkpoint written; continue with --resume {run_dir}" if args.checkpoint_every else "no --checkpoint-every"
            print(f"SIGTERM: stopping at step {global_step} ({saved})", flush=True)
            envs.close()
            writer.close()
            raise SystemExit(128 + signal.SIGTERM)  # not finished: a sweep resumes it
        if solved:
            print(f"mean success of the last 5 updates {np.mean(success_history[-5:]):.3f} >= --stop-at-success {args.stop_at_success}: stopping at step {global_step}", flush=True)
            break

    if args.save_model:
        model_path = os.path.join(run_dir, f"{args.exp_name}.cleanrl_model")
        torch.save({"model": agent.state_dict(), "args": vars(args)}, model_path)
        print(f"model saved to {model_path}")
        episodic_returns, successes = evaluate(model_path, args.eval_episodes, device, args.capture_video, f"{run_name}-eval")
        for idx, episodic_return in enumerate(episodic_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, idx)
        summary = f"eval over {len(episodic_returns)} episodes: mean return {np.mean(episodic_returns):.2f}"
        if successes:
            writer.add_scalar("eval/success_rate", np.mean(successes), global_step)
            summary += f", success rate {np.mean(successes):.2f}"
        print(summary)

    envs.close()
    writer.close()
