# PPO with GaLiTe (the exact Gated Linear Transformer of Pramanik, Elelimy, Machado & White, TMLR 2024) as
# the memory, in CleanRL's one-file style: the model that AGaLiTe approximates, for the paper's ablation.
# `diff ppo_agalite.py ppo_galite.py` shows the attention layer and its state; everything else is the same.
#
# GaLiTe keeps, per head, the full matrix state C (d x eta*d) of a gated linear transformer; AGaLiTe
# replaces it by r cosine oscillators over two vectors. Names follow the paper (and shared/AGALITE.md
# section 2): `eta`, `C`, `s`, `beta`, `gamma`.
#
# Details follow the authors' release of GaLiTe, so that this is the model the paper compared against: the
# query's feature map reads a per-head linear map of the input (one more layer than the keys'), the first
# block's input embedding is linear (no ReLU), the attention's denominator adds eps = 1e-10, and every part
# (each head's k, v, beta, gamma, query input, p1, p2, p3, and each of the GRU gates' six matrices) starts as
# its own orthogonal matrix. The layer norms keep torch's eps (1e-5; flax's is 1e-6).
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
import galite_kernels  # the training chunk's recurrence as one operator, optionally C++ (--fused-kernels)


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
    """run a training chunk's matrix recurrence as galite_kernels.py's operator (its own backward, rebuilding 8-step
    blocks instead of keeping every d x eta*d state), as C++ on a CPU: the same results to rounding, T-Maze training
    4.2x faster (297 against 71 SPS, 2-core CPU) in a quarter of the memory. Built once per machine (~25 s, then
    cached); without a C++ compiler (or on a GPU) one line says so and the operator's torch loops run;
    --no-fused-kernels: the loop over steps written out in GaLiTeAttention.forward"""
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
    """number of GRU-gated GaLiTe blocks"""
    d_model: int = 128
    """width of the residual stream (the observation embedding and every block's output)"""
    n_heads: int = 4
    """attention heads per block (H)"""
    d_head: int = 64
    """size of each head's keys, queries and values (d)"""
    d_ffc: int = 128
    """hidden size of each block's feed-forward part"""
    eta: int = 2
    """size of the learned feature map (the paper's eta; 2 in the release's T-Maze GaLiTe): keys in eta * d dims"""
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
    for name in ("n_layers", "d_model", "n_heads", "d_head", "d_ffc", "eta"):  # the memory model's sizes
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


class GaLiTeAttention(nn.Module):
    """One GaLiTe attention layer (shared/AGALITE.md section 2). Per head, a state of fixed size:
    C (d, eta*d) and s (eta*d): d*eta*d + eta*d floats, whatever the context length.
    """

    def __init__(self, d_model, n_heads, d_head, eta, gate_bias=0.0, eps=1e-10, fused=False):
        super().__init__()
        self.n_heads, self.d_head, self.eta, self.eps = n_heads, d_head, eta, eps
        self.fused = fused  # training chunks (T > 1) through galite_kernels.attention instead of the loop below
        # one linear map gives, per head, k, v, beta, gamma and the query's input x_q (each d), p1 and p3 (each eta)
        self.parts = [d_head] * 5 + [eta] * 2
        self.proj = nn.Linear(d_model, n_heads * sum(self.parts))
        orthogonal_parts_(self.proj.weight, self.parts * n_heads)
        nn.init.zeros_(self.proj.bias)
        bias = self.proj.bias.detach().view(n_heads, sum(self.parts))
        bias[:, 2 * d_head : 4 * d_head] = gate_bias  # beta, gamma
        bias[:, 5 * d_head + eta :] = gate_bias  # p3
        # per head, a second map from x_q to q (d) and p2 (eta): the release's query passes one more Dense layer
        self.query_weight = nn.Parameter(torch.empty(n_heads, d_head + eta, d_head))
        self.query_bias = nn.Parameter(torch.zeros(n_heads, d_head + eta))
        for weight in self.query_weight:
            orthogonal_parts_(weight, [d_head, eta])
        self.out = layer_init(nn.Linear(n_heads * d_head, d_model))  # heads concatenated, back to d_model

    def forward(self, x, state, keep):
        """x: (T, B, d_model), state: (C, s) of the step before x[0], keep: (T, B) 0.0 where x[t] starts an
        episode -> (T, B, d_model), state after x[-1]."""
        T, B, _ = x.shape
        H, d, eta = self.n_heads, self.d_head, self.eta
        k, v, beta, gamma, x_q, p1, p3 = self.proj(x).view(T, B, H, -1).split(self.parts, dim=-1)
        q, p2 = (torch.einsum("tbhi,hoi->tbho", x_q, self.query_weight) + self.query_bias).split([d, eta], dim=-1)

        def outer(a, b):  # (T, B, H, eta) x (T, B, H, d) -> (T, B, H, eta*d)
            return (a.unsqueeze(-1) * b.unsqueeze(-2)).flatten(-2)

        # the same feature maps and gates as AGaLiTe
        key = outer(torch.relu(p1), torch.relu(k))
        query = outer(torch.relu(p2), torch.relu(q))
        gamma = outer(torch.sigmoid(p3), torch.sigmoid(gamma))  # (T, B, H, eta*d) gate of keys
        beta = torch.sigmoid(beta)  # (T, B, H, d) gate of values
        v_in, k_in = beta * v, gamma * key  # gated inputs v'_t, k'_t
        if self.fused and T > 1:  # the recurrence below as one custom operator (galite_kernels.py), C++ on a CPU
            attn, state = galite_kernels.attention(beta, gamma, v_in, k_in, query, keep, state, self.eps)
            return self.out(attn), state  # (T, B, d_model)

        # the recurrences (the release's), with the state forgotten where an episode starts:
        #   C_t = (1 - beta_t gamma_t^T) * C_{t-1} + v'_t k'_t^T      (d x eta*d per head)
        #   s_t = (1 - gamma_t) * s_{t-1} + k'_t
        #   a_t = C_t query_t / (<s_t, query_t> + eps)
        # AGaLiTe's two vector recurrences decay the matrix they stand for by the factorised gate
        # (1 - beta_t)(1 - gamma_t)^T instead of 1 - beta_t gamma_t^T (shared/AGALITE.md section 2).
        # The exact decay does not factorise over time (the decay from step i to step t is a full d x eta*d
        # matrix), so training runs the recurrence itself: a loop over the T steps, one state at a time (with
        # --fused-kernels, galite_kernels.py's operator runs this loop, keeping only every 8th state for its backward).
        # (A parallel scan over the T stacked matrices gives the same numbers about 4.6x slower on a CPU, measured
        # before the loop took its steps with unbind.) The steps are taken with unbind, not beta[t]: the backward
        # of indexing writes a zero tensor the size of all T steps at every step (work growing as T^2; the
        # backward at T = 401, B = 4 took 4x longer).
        C, s = state  # (B, H, d, eta*d), (B, H, eta*d)
        attn = []
        steps = zip(*(a.unbind(0) for a in (keep, beta, gamma, v_in, k_in, query)))  # one slice of each per step
        for keep_t, beta_t, gamma_t, v_in_t, k_in_t, query_t in steps:
            keep_t = keep_t.view(B, 1, 1)
            C, s = C * keep_t.unsqueeze(-1), s * keep_t  # forget the state where x[t] starts an episode
            C = (1 - beta_t.unsqueeze(-1) * gamma_t.unsqueeze(-2)) * C + v_in_t.unsqueeze(-1) * k_in_t.unsqueeze(-2)
            s = (1 - gamma_t) * s + k_in_t
            numerator = (C @ query_t.unsqueeze(-1)).squeeze(-1)  # (B, H, d)
            denominator = (s * query_t).sum(-1, keepdim=True) + self.eps  # (B, H, 1)
            attn.append((numerator / denominator).flatten(-2))  # (B, H*d)
        return self.out(torch.stack(attn)), (C, s)  # (T, B, d_model)


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


class GaLiTeBlock(nn.Module):
    """GRU-gated pre-LayerNorm block around the attention (shared/AGALITE.md section 3)."""

    def __init__(self, args):
        super().__init__()
        self.ln1 = nn.LayerNorm(args.d_model)
        self.attention = GaLiTeAttention(args.d_model, args.n_heads, args.d_head, args.eta, args.gate_bias, fused=args.fused_kernels)
        self.gate1 = GRUGate(args.d_model, args.gru_bias)
        self.ln2 = nn.LayerNorm(args.d_model)
        self.ffc = nn.Sequential(
            layer_init(nn.Linear(args.d_model, args.d_ffc)), nn.ReLU(),
            layer_init(nn.Linear(args.d_ffc, args.d_model)), nn.ReLU(),
        )
        self.gate2 = GRUGate(args.d_model, args.gru_bias)

    def forward(self, x, state, keep):
        a, state = self.attention(self.ln1(x), state, keep)
        x = self.gate1(x, torch.relu(a))
        return self.gate2(x, self.ffc(self.ln2(x))), state


class Agent(nn.Module):
    """Encoder -> Linear(d_model) (no ReLU, as the release's GaLiTe) -> n_layers GaLiTe blocks -> actor and critic heads.

    Memory state: a tuple of tensors, each with the batch in dim 1 (the PPO loop selects sequences with
    `s[:, idx]`): C (L, B, H, d, eta*d) and s (L, B, H, eta*d).
    """

    def __init__(self, observation_space, action_space, args):
        super().__init__()
        sizes = {name: getattr(args, name) for name in ["n_layers", "d_model", "n_heads", "d_head", "d_ffc", "eta"]}
        bad = {name: value for name, value in sizes.items() if value < 1}
        if bad:
            raise ValueError(f"GaLiTe sizes must be positive integers, got {bad}")
        self.nvec = envs_lib.action_nvec(action_space)
        self.encoder, n_features = envs_lib.make_encoder(observation_space)
        self.embed = layer_init(nn.Linear(n_features, args.d_model))
        self.layers = nn.ModuleList([GaLiTeBlock(args) for _ in range(args.n_layers)])
        self.actor = make_head(args.d_model, sum(self.nvec), args.head_hidden, args.actor_gain, args.head_activation, args.head_hidden_gain)
        self.critic = make_head(args.d_model, 1, args.head_hidden, args.critic_gain, args.head_activation, args.head_hidden_gain)
        self.state_shapes = [
            (args.n_heads, args.d_head, args.eta * args.d_head),  # C
            (args.n_heads, args.eta * args.d_head),  # s
        ]

    def initial_state(self, batch_size, device):
        n_layers = len(self.layers)
        return tuple(torch.zeros((n_layers, batch_size) + shape, device=device) for shape in self.state_shapes)

    def memory(self, x, state, done):
        """x: (T, B, *obs_shape), done: (T, B) 1.0 where x[t] starts an episode -> (T, B, d_model), new state.
        T = 1 is one acting step (constant cost); T > 1 runs a training chunk step by step (see GaLiTeAttention)."""
        T, B = done.shape
        hidden = self.embed(self.encoder(x.flatten(0, 1))).view(T, B, -1)  # (T, B, d_model)
        keep = 1.0 - done
        new_states = []
        for layer, layer_state in zip(self.layers, zip(*state)):
            hidden, layer_state = layer(hidden, layer_state, keep)
            new_states.append(layer_state)
        return hidden, tuple(torch.stack(parts) for parts in zip(*new_states))

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
        if args.fused_kernels:  # optional accelerator: galite_kernels.py's operator as C++ (CPU)
            galite_kernels.enable(device.type)
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
