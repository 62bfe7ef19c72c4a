"""GaLiTe's matrix recurrence as a custom operator with its own backward, and a fused C++ kernel for it: an
optional accelerator for ppo_galite.py, built as agalite_kernels.py is for ppo_agalite.py.

The operators `galite::matrix_recurrence` and `galite::matrix_recurrence_backward` (torch.library custom ops,
defined here) run the recurrence of one GaLiTe attention layer over a training chunk as readable torch loops
over time: those functions and their docstrings are the specification and the reference, and they run wherever
no kernel is registered. Unlike autograd through ppo_galite.py's loop over steps, the forward keeps only the
states at the starts of blocks of `block` steps, and the backward rebuilds one block of states at a time from
its start and runs the adjoint recurrence backwards in time through it; torch.compile sees each operator as one
opaque call (fake implementations and an autograd formula are registered) instead of unrolling T steps.

`enable("cpu")` registers, through torch.library, C++ implementations of the same operators (galite_kernels.cpp,
built once with torch.utils.cpp_extension.load_inline and cached): per sequence and head, one pass over the
d x eta*d matrix state per step, which updates it and reads it out with the query at once. Where they cannot be
had (no C++ compiler, a failed build) one line says so, once, and the torch loops run. `loops()` switches the
registered kernels off for a `with` block (tests, benchmarks).

    import galite_kernels
    galite_kernels.enable("cpu")      # True when the fused kernels are now in use
    a, state = galite_kernels.attention(beta, gamma, v_in, k_in, query, keep, state, eps)   # T > 1
"""

import functools
import os

import torch

import fused_kernels  # the C++ build and the registration, shared with agalite_kernels.py

OPS = ("galite::matrix_recurrence", "galite::matrix_recurrence_backward")
CPP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "galite_kernels.cpp")
CPP_FUNCTIONS = ["matrix_recurrence_forward", "matrix_recurrence_backward"]


# ------------------------------------------------------------------------------------------ the torch loops
def _dtype(*tensors):
    """The dtype torch's type promotion gives the arithmetic on these tensors (the operators compute in it)."""
    return functools.reduce(torch.promote_types, [t.dtype for t in tensors])


def recurrence_(x, a, h):
    """h_t = a_t * h_{t-1} + x_t over t = 0 .. L-1 from h_{-1} = h, in place: x (L, ...) holds the inputs on entry
    and the states on return; a (L, ...) broadcasts against x. A plain loop: nothing is divided by a product of
    gates (which vanishes where gates are near 1 or an episode starts)."""
    for x_t, a_t in zip(x.unbind(0), a.unbind(0)):
        h = x_t.addcmul_(a_t, h)
    return x


def adjoint_(g, a, g_last):
    """The adjoint of recurrence_, backwards in time, in place: G_t = g_t + a_{t+1} G_{t+1}, with g (L, ...)
    holding on entry the gradients through the outputs at each step and on return G_t = dL/dh_t through all later
    steps too; g_last: dL/dh_{L-1} from the steps after the block (or from the state carried out of the chunk)."""
    g[-1] += g_last
    g_t, a_t = g.unbind(0), a.unbind(0)
    for t in range(g.shape[0] - 2, -1, -1):
        g_t[t].addcmul_(a_t[t + 1], g_t[t + 1])
    return g


def block_states(beta, gamma, v_in, k_in, keep, C, s):
    """The states of the steps of one block from the states (C, s) before it, and their decays:
        A_t = keep_t (1 - beta_t gamma_t^T)  (L, B, H, d, F),    C_t = A_t * C_{t-1} + v'_t k'_t^T
        a_t = keep_t (1 - gamma_t)           (L, B, H, F),       s_t = a_t * s_{t-1} + k'_t
    -> C_t (L, B, H, d, F), s_t (L, B, H, F), A, a. (keep_t is 0 or 1 in the model: the product is ppo_galite.py's
    `(1 - beta gamma^T) * (keep C)` to the bit.)"""
    kept = keep.view(keep.shape + (1, 1))  # (L, B, 1, 1)
    A = (1 - beta.unsqueeze(-1) * gamma.unsqueeze(-2)) * kept.unsqueeze(-1)
    a = (1 - gamma) * kept
    Cs = recurrence_(v_in.unsqueeze(-1) * k_in.unsqueeze(-2), A, C)
    ss = recurrence_(k_in.clone(), a, s)
    return Cs, ss, A, a


# The recurrence is a custom operator with its own backward, not autograd through a loop over steps:
# - autograd keeps every step's d x eta*d state (and its decay) for the backward: 1.6 GiB per layer at
#   T = 128, B = 8, H = 4, d = 64, eta = 2, in float32; this keeps one state per block of 8 steps;
# - it makes ~10 graph nodes per step, run one by one backwards;
# - torch.compile sees one opaque call (it would otherwise unroll the loop over time into its graph).
@torch.library.custom_op("galite::matrix_recurrence", mutates_args=())
def matrix_recurrence(
    beta: torch.Tensor, gamma: torch.Tensor, v_in: torch.Tensor, k_in: torch.Tensor, query: torch.Tensor,
    keep: torch.Tensor, C0: torch.Tensor, s0: torch.Tensor, block: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GaLiTe's recurrence over a chunk of T steps (shared/AGALITE.md section 2), per sequence b and head h:
        C_t = (1 - beta_t gamma_t^T) * (keep_t C_{t-1}) + v'_t k'_t^T      (d x F, F = eta*d)
        s_t = (1 - gamma_t) * (keep_t s_{t-1}) + k'_t                      (F)
    and its read-outs with the query, the attention's numerator n_t = C_t query_t and denominator
    z_t = <s_t, query_t> (the layer forms a_t = n_t / (z_t + eps)).
    beta, v_in (T, B, H, d); gamma, k_in, query (T, B, H, F); keep (T, B) 0 where step t starts an episode;
    C0 (B, H, d, F), s0 (B, H, F): the states before step 0
    -> n (T, B, H, d), z (T, B, H), the last states C_{T-1}, s_{T-1}, and the states before the first step of
    every block of `block` steps, (ceil(T / block), B, H, d, F) and (ceil(T / block), B, H, F), kept for the
    backward (matrix_recurrence_backward rebuilds one block of states at a time from them)."""
    dtype = _dtype(beta, gamma, v_in, k_in, query, keep, C0, s0)
    beta, gamma, v_in, k_in, query, keep, C, s = (x.to(dtype) for x in (beta, gamma, v_in, k_in, query, keep, C0, s0))
    nums, dens, C_starts, s_starts = [], [], [], []
    for b in range(0, beta.shape[0], block):
        C_starts.append(C)
        s_starts.append(s)
        part = slice(b, b + block)
        Cs, ss, _, _ = block_states(beta[part], gamma[part], v_in[part], k_in[part], keep[part], C, s)
        nums.append((Cs @ query[part].unsqueeze(-1)).squeeze(-1))
        dens.append((ss * query[part]).sum(-1))
        C, s = Cs[-1].clone(), ss[-1].clone()  # (copies: views would keep the whole block's states alive)
    outputs = torch.cat(nums), torch.cat(dens), C, s, torch.stack(C_starts), torch.stack(s_starts)
    return tuple(x.contiguous() for x in outputs)  # (as the fake implementation: whatever the inputs' layouts)


@torch.library.custom_op("galite::matrix_recurrence_backward", mutates_args=())
def matrix_recurrence_backward(
    d_num: torch.Tensor, d_den: torch.Tensor, dC_last: torch.Tensor, ds_last: torch.Tensor, beta: torch.Tensor,
    gamma: torch.Tensor, v_in: torch.Tensor, k_in: torch.Tensor, query: torch.Tensor, keep: torch.Tensor,
    C_starts: torch.Tensor, s_starts: torch.Tensor, block: int,
) -> list[torch.Tensor]:
    """Gradients of matrix_recurrence with respect to beta, gamma, v_in, k_in, query, C0 and s0, given those of
    its outputs n, z, C_{T-1}, s_{T-1}. Block by block from the last: rebuild the block's states from its start,
    then run the adjoint recurrences backwards in time. With A_t = keep_t (1 - beta_t gamma_t^T) and
    a_t = keep_t (1 - gamma_t) the decays, and G_t = dL/dC_t, g_t = dL/ds_t (through step t's read-outs and all
    later steps):
        G_t = dn_t query_t^T + A_{t+1} * G_{t+1},      g_t = dz_t query_t + a_{t+1} * g_{t+1}
    (G_{T-1} and g_{T-1} also get dL/dC_{T-1}, dL/ds_{T-1}); then, from n_t = C_t query_t, z_t = <s_t, query_t>,
    C_t = A_t * C_{t-1} + v'_t k'_t^T and s_t = a_t * s_{t-1} + k'_t:
        dL/dquery_t = C_t^T dn_t + dz_t s_t
        dL/dv'_t    = G_t k'_t,                    dL/dk'_t = G_t^T v'_t + g_t
        dL/dbeta_t  = -(P_t gamma_t),              P_t = G_t * (keep_t C_{t-1})       (d x F)
        dL/dgamma_t = -(P_t^T beta_t) - g_t * (keep_t s_{t-1})
        dL/dC_{t-1} = A_t * G_t,                   dL/ds_{t-1} = a_t * g_t    (at t = 0: dL/dC0, dL/ds0).
    keep is not differentiated (it is data: the episode starts)."""
    dtype = _dtype(d_num, d_den, dC_last, ds_last, beta, gamma, v_in, k_in, query, keep, C_starts, s_starts)
    d_num, d_den, carry_C, carry_s, beta, gamma, v_in, k_in, query, keep = (
        x.to(dtype) for x in (d_num, d_den, dC_last, ds_last, beta, gamma, v_in, k_in, query, keep))
    grads = [torch.empty(x.shape, dtype=dtype, device=x.device) for x in (beta, gamma, v_in, k_in, query)]
    T = beta.shape[0]
    for i in reversed(range(C_starts.shape[0])):
        part = slice(i * block, min((i + 1) * block, T))
        bt, gm, v, k, q, kp = (x[part] for x in (beta, gamma, v_in, k_in, query, keep))
        C_start, s_start = C_starts[i].to(dtype), s_starts[i].to(dtype)
        Cs, ss, A, a = block_states(bt, gm, v, k, kp, C_start, s_start)  # recomputed
        kept = kp.view(kp.shape + (1, 1))
        C_prev = torch.cat([C_start.unsqueeze(0), Cs[:-1]]) * kept.unsqueeze(-1)  # keep_t C_{t-1}
        s_prev = torch.cat([s_start.unsqueeze(0), ss[:-1]]) * kept  # keep_t s_{t-1}
        dn, dz = d_num[part], d_den[part].unsqueeze(-1)
        G = adjoint_(dn.unsqueeze(-1) * q.unsqueeze(-2), A, carry_C)  # dL/dC_t
        g = adjoint_(dz * q, a, carry_s)  # dL/ds_t
        P = G * C_prev
        grads[0][part] = -(P @ gm.unsqueeze(-1)).squeeze(-1)  # beta
        grads[1][part] = -(bt.unsqueeze(-2) @ P).squeeze(-2) - g * s_prev  # gamma
        grads[2][part] = (G @ k.unsqueeze(-1)).squeeze(-1)  # v'
        grads[3][part] = (v.unsqueeze(-2) @ G).squeeze(-2) + g  # k'
        grads[4][part] = (dn.unsqueeze(-2) @ Cs).squeeze(-2) + dz * ss  # query
        carry_C, carry_s = A[0] * G[0], a[0] * g[0]  # dL/dC, dL/ds before the block
    return grads + [carry_C.contiguous(), carry_s.contiguous()]


@matrix_recurrence.register_fake
def _(beta, gamma, v_in, k_in, query, keep, C0, s0, block=8):
    dtype = _dtype(beta, gamma, v_in, k_in, query, keep, C0, s0)
    n_blocks = (beta.shape[0] + block - 1) // block
    return (beta.new_empty(beta.shape, dtype=dtype), beta.new_empty(beta.shape[:-1], dtype=dtype),
            C0.new_empty(C0.shape, dtype=dtype), s0.new_empty(s0.shape, dtype=dtype),
            C0.new_empty((n_blocks,) + C0.shape, dtype=dtype), s0.new_empty((n_blocks,) + s0.shape, dtype=dtype))


@matrix_recurrence_backward.register_fake
def _(d_num, d_den, dC_last, ds_last, beta, gamma, v_in, k_in, query, keep, C_starts, s_starts, block):
    dtype = _dtype(d_num, d_den, dC_last, ds_last, beta, gamma, v_in, k_in, query, keep, C_starts, s_starts)
    return [x.new_empty(x.shape, dtype=dtype) for x in (beta, gamma, v_in, k_in, query, dC_last, ds_last)]


def _matrix_recurrence_setup(ctx, inputs, output):
    ctx.block = inputs[-1]
    ctx.dtypes = [x.dtype for x in inputs[:8]]
    ctx.save_for_backward(*inputs[:6], output[4], output[5])  # the gates, inputs, query, keep and block starts


def _matrix_recurrence_grad(ctx, d_num, d_den, dC_last, ds_last, _C_starts, _s_starts):
    grads = matrix_recurrence_backward(d_num, d_den, dC_last, ds_last, *ctx.saved_tensors, ctx.block)
    grads = [g.to(dtype) for g, dtype in zip(grads, ctx.dtypes[:5] + ctx.dtypes[6:8])]
    return (*grads[:5], None, *grads[5:], None)


matrix_recurrence.register_autograd(_matrix_recurrence_grad, setup_context=_matrix_recurrence_setup)


def attention(beta, gamma, v_in, k_in, query, keep, state, eps, block=8):
    """GaLiTeAttention's recurrence and read-out over a chunk, for T > 1 (ppo_galite.py's loop over steps in one
    operator): beta, v_in (T, B, H, d); gamma, k_in, query (T, B, H, eta*d); keep (T, B); state (C, s) before
    step 0 -> a_t = C_t query_t / (<s_t, query_t> + eps) as (T, B, H*d) (before the output projection), and the
    state (C, s) after the last step."""
    C0, s0 = state
    num, den, C, s, _, _ = matrix_recurrence(beta, gamma, v_in, k_in, query, keep, C0, s0, block)
    return (num / (den.unsqueeze(-1) + eps)).flatten(-2), (C, s)


# ------------------------------------------------------------------------------------------ the C++ kernels
# The C++ functions take the sequences and heads flattened (N = B * H) and every tensor contiguous, in one dtype;
# these wrappers do that and give the outputs the operators' shapes.
def _flat(x, dtype, *shape):
    return x.to(dtype).reshape(*shape).contiguous()


def matrix_recurrence_cpu(beta, gamma, v_in, k_in, query, keep, C0, s0, block=8):
    """galite::matrix_recurrence in C++."""
    dtype = _dtype(beta, gamma, v_in, k_in, query, keep, C0, s0)
    T, B, H, d = beta.shape
    F, N = gamma.shape[-1], B * H
    keep_ = keep.to(dtype).reshape(T, B, 1).expand(T, B, H).reshape(T, N).contiguous()
    num, den, C, s, C_starts, s_starts = _kernels.extension.matrix_recurrence_forward(
        _flat(beta, dtype, T, N, d), _flat(gamma, dtype, T, N, F), _flat(v_in, dtype, T, N, d),
        _flat(k_in, dtype, T, N, F), _flat(query, dtype, T, N, F), keep_, _flat(C0, dtype, N, d, F),
        _flat(s0, dtype, N, F), block)
    n_blocks = C_starts.shape[0]
    return (num.view(T, B, H, d), den.view(T, B, H), C.view(B, H, d, F), s.view(B, H, F),
            C_starts.view(n_blocks, B, H, d, F), s_starts.view(n_blocks, B, H, F))


def matrix_recurrence_backward_cpu(d_num, d_den, dC_last, ds_last, beta, gamma, v_in, k_in, query, keep, C_starts,
                                   s_starts, block):
    """galite::matrix_recurrence_backward in C++."""
    dtype = _dtype(d_num, d_den, dC_last, ds_last, beta, gamma, v_in, k_in, query, keep, C_starts, s_starts)
    T, B, H, d = beta.shape
    F, N, n_blocks = gamma.shape[-1], B * H, C_starts.shape[0]
    keep_ = keep.to(dtype).reshape(T, B, 1).expand(T, B, H).reshape(T, N).contiguous()
    grads = _kernels.extension.matrix_recurrence_backward(
        _flat(d_num, dtype, T, N, d), _flat(d_den, dtype, T, N), _flat(dC_last, dtype, N, d, F),
        _flat(ds_last, dtype, N, F), _flat(beta, dtype, T, N, d), _flat(gamma, dtype, T, N, F),
        _flat(v_in, dtype, T, N, d), _flat(k_in, dtype, T, N, F), _flat(query, dtype, T, N, F), keep_,
        _flat(C_starts, dtype, n_blocks, N, d, F), _flat(s_starts, dtype, n_blocks, N, F), block)
    shapes = [x.shape for x in (beta, gamma, v_in, k_in, query, dC_last, ds_last)]
    return [g.view(shape) for g, shape in zip(grads, shapes)]


CPU_KERNELS = dict(zip(OPS, (matrix_recurrence_cpu, matrix_recurrence_backward_cpu)))


# ----------------------------------------------------------------------------------------------- registration
def kernels(device_type):
    """{operator name: implementation} for a device type (only "cpu" has them), or None with the reason said once."""
    if device_type != "cpu":
        _kernels.say_once(device_type, f"no fused kernels for device type {device_type}")
        return None
    return CPU_KERNELS if _kernels.build_cpu() is not None else None


# the module's state and its functions enable(device_type="cpu"), disable, enabled and loops (fused_kernels.Kernels)
_kernels = fused_kernels.Kernels("galite_kernels", OPS, "GaLiTe's recurrence runs as torch loops", CPP_FILE, CPP_FUNCTIONS,
                                 implementations=kernels)
enable, disable, enabled, loops = _kernels.enable, _kernels.disable, _kernels.enabled, _kernels.loops
