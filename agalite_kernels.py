"""Fused kernels for AGaLiTe's recurrence operators: an optional accelerator for ppo_agalite.py.

ppo_agalite.py defines the operators `agalite::key_readout`, `agalite::key_readout_backward`,
`agalite::linear_recurrence` and `agalite::linear_recurrence_backward` (torch.library custom ops) as readable
torch loops over time: those functions and their docstrings are the specification and the reference, and they
run wherever no kernel is registered. `enable(device_type)` registers, through torch.library, other
implementations of the same operators for one device type, so that the model calls the same operators on every
device and torch.compile still sees one opaque call (the operators' fake implementations and autograd formulas
are unchanged):

- "cpu": C++ (agalite_kernels.cpp), built once with torch.utils.cpp_extension.load_inline and cached (first
  build about 30-60 s, then the cached library loads in well under a second). key_readout forms query_t, a_t and
  k'_t from their eta- and d-sized factors inside its loop instead of materialising eta*d-sized vectors; that,
  not the fusion of the loop alone, is where its time goes (benchmarks/results/kernels_cpu.md).
- "cuda": Triton (agalite_triton.py), only when triton can be imported.

Where the kernels cannot be had (no C++ compiler, a failed build, no triton) one line says so, once, and the
torch loops run. `loops()` switches the registered kernels off for a `with` block (tests, benchmarks).

    import agalite_kernels
    agalite_kernels.enable("cpu")     # True when the fused kernels are now in use
"""

import functools
import math
import os

import torch

import fused_kernels  # the C++ build and the registration, shared with galite_kernels.py

OPS = ("agalite::key_readout", "agalite::key_readout_backward", "agalite::linear_recurrence",
       "agalite::linear_recurrence_backward")
CPP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agalite_kernels.cpp")
CPP_FUNCTIONS = ["key_readout_forward", "key_readout_backward", "linear_recurrence_forward", "linear_recurrence_backward"]


# ------------------------------------------------------------------------------------------------ CPU wrappers
# The C++ functions take the batch dims N flattened and every tensor contiguous; these wrappers do that, and give
# the outputs the shapes (and strides) of the operators' fake implementations in ppo_agalite.py.
def _like(result, ref):
    """result (contiguous) with the shape and strides torch.empty_like(ref) has, as the fake implementations give."""
    result = result.view(ref.shape)
    like = torch.empty_like(ref)
    return result if like.stride() == result.stride() else like.copy_(result)


def _dtype(*tensors):
    """The dtype torch's type promotion gives the loops' arithmetic on these tensors (the kernels compute in it)."""
    return functools.reduce(torch.promote_types, [t.dtype for t in tensors])


def _key_inputs(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, dtype):
    T, J = c.shape[0], c.shape[-1]
    N = query_u.shape[1:-1]

    def flat(x, size):
        return x.expand(T, *N, size).reshape(T, -1, size).to(dtype).contiguous()

    eta, d = query_u.shape[-1], query_w.shape[-1]
    factors = [flat(x, eta if i % 2 == 0 else d) for i, x in enumerate((query_u, query_w, gamma_u, gamma_w, k_u, k_w))]
    return factors, flat(keep, 1).squeeze(-1), flat(c, J)


def key_readout_cpu(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, h0, block=8):
    """agalite::key_readout (ppo_agalite.key_readout) in C++."""
    dtype = _dtype(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, h0)
    factors, keep_, c_ = _key_inputs(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, dtype)
    J, F = h0.shape[-2:]
    y, last, starts = _kernels.extension.key_readout_forward(*factors, keep_, c_, h0.reshape(-1, J, F).to(dtype).contiguous(), block)
    return y.view(c.shape), last.view(h0.shape), starts.view((starts.shape[0],) + h0.shape)


def key_readout_backward_cpu(dy, dh_last, query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, starts, block):
    """agalite::key_readout_backward (ppo_agalite.key_readout_backward) in C++."""
    dtype = _dtype(dy, dh_last, query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, starts)
    factors, keep_, c_ = _key_inputs(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, dtype)
    J, F = starts.shape[-2:]
    grads = _kernels.extension.key_readout_backward(
        dy.expand(c.shape).reshape(c_.shape).to(dtype).contiguous(), dh_last.reshape(-1, J, F).to(dtype).contiguous(),
        *factors, keep_, c_, starts.reshape(starts.shape[0], -1, J, F).to(dtype).contiguous(), block)
    refs = (query_u, query_w, gamma_u, gamma_w, k_u, k_w, dh_last)
    return [_like(g.to(ref.dtype), ref) for g, ref in zip(grads, refs)]


def _gate_layout(a, x):
    """(P, R, Q) with x viewed as (T, P, R, Q) and a as (T, P, 1, Q): the dims a broadcasts over (one run of them,
    AGaLiTe's r oscillator rows) become R, and the C++ loop reads each gate once for all of them. None when a
    broadcasts over dims that are not one run (then a is expanded: R = 1)."""
    dims, a_dims = x.shape[1:], (1,) * (x.dim() - a.dim()) + a.shape[1:]
    runs = [i for i, (n, m) in enumerate(zip(dims, a_dims)) if m == 1 and n != 1]
    if not runs:
        return math.prod(dims[:-1]), 1, (dims[-1] if dims else 1)
    i, j = runs[0], runs[-1] + 1
    if any(a_dims[k] != 1 for k in range(i, j)):
        return None
    return math.prod(dims[:i]), math.prod(dims[i:j]), math.prod(dims[j:])


def linear_recurrence_cpu(a, x, h0):
    """agalite::linear_recurrence (ppo_agalite.linear_recurrence) in C++."""
    T, layout = x.shape[0], _gate_layout(a, x)
    if layout is None:
        a, layout = a.expand_as(x), (math.prod(x.shape[1:-1]), 1, x.shape[-1])
    P, R, Q = layout
    dtype = _dtype(a, x, h0)
    h = _kernels.extension.linear_recurrence_forward(
        a.to(dtype).reshape(T, P, Q).contiguous(), x.to(dtype).reshape(T, P, R, Q).contiguous(),
        h0.expand(x.shape[1:]).to(dtype).reshape(P, R, Q).contiguous())
    return _like(h.to(x.dtype), x)  # (the loop updates a copy of x in place: x's dtype)


def linear_recurrence_backward_cpu(dh, a, h, h0):
    """agalite::linear_recurrence_backward (ppo_agalite.linear_recurrence_backward) in C++."""
    T, layout, a_in = h.shape[0], _gate_layout(a, h), a
    if layout is None:
        a, layout = a.expand_as(h), (math.prod(h.shape[1:-1]), 1, h.shape[-1])
    P, R, Q = layout
    dtype = _dtype(dh, a, h, h0)
    da, dx, dh0 = _kernels.extension.linear_recurrence_backward(
        dh.to(dtype).reshape(T, P, R, Q).contiguous(), a.to(dtype).reshape(T, P, Q).contiguous(),
        h.to(dtype).reshape(T, P, R, Q).contiguous(), h0.expand(h.shape[1:]).to(dtype).reshape(P, R, Q).contiguous())
    da = da.view(a.shape).sum_to_size(a_in.shape).to(a_in.dtype)  # (a sum only where a was expanded)
    return [_like(da, a_in), _like(dx.to(h.dtype), h), _like(dh0.view(h.shape[1:]).sum_to_size(h0.shape).to(h0.dtype), h0)]


CPU_KERNELS = dict(zip(OPS, (key_readout_cpu, key_readout_backward_cpu, linear_recurrence_cpu, linear_recurrence_backward_cpu)))


# ----------------------------------------------------------------------------------------------- registration
def kernels(device_type):
    """{operator name: implementation} for a device type, or None with the reason said once."""
    if device_type == "cpu":
        return CPU_KERNELS if _kernels.build_cpu() is not None else None
    if device_type == "cuda":
        try:
            import agalite_triton
        except ImportError as e:
            _kernels.say_once("cuda", f"no Triton kernels ({e})")
            return None
        why = self_check(agalite_triton.KERNELS, "cuda")
        if why:
            _kernels.say_once("cuda", f"the Triton kernels failed their check on this GPU ({why})")
            return None
        return agalite_triton.KERNELS
    _kernels.say_once(device_type, f"no fused kernels for device type {device_type}")
    return None


def self_check(impls, device_type, atol=1e-3):
    """Runs each kernel once at a small size on `device_type` against the operators' torch loops (not yet replaced
    there), forward and backward, in float32; returns None when they agree, else why not. The Triton kernels are
    tested on CPU tensors in Triton's interpreter (tests/test_kernels.py); this catches what only a real GPU shows
    (a compilation failure, a wrong result) before a run relies on them."""
    ops = torch.ops.agalite
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device_type)

    T, B, H, eta, d, J, block = 11, 2, 3, 4, 16, 3, 4  # T not a multiple of the block
    factors = list(rand(T, B, H, 3 * (eta + d)).split([eta, d] * 3, dim=-1))  # views, as the model passes them
    keep = (rand(T, B, 1, 1) > 0.3).float()
    c, h0 = rand(T, B, H, J) - 0.5, rand(B, H, J, eta * d) - 0.5
    a, x, h0_v = rand(T, B, H, 1, d), rand(T, B, H, J - 1, d) - 0.5, rand(B, H, J - 1, d) - 0.5
    try:
        for name, inputs, backward in [
            ("key_readout", (*factors, keep, c, h0, block), "key_readout_backward"),
            ("linear_recurrence", (a, x, h0_v), "linear_recurrence_backward"),
        ]:
            want = getattr(ops, name)(*inputs)
            got = impls[f"agalite::{name}"](*inputs)
            if name == "key_readout":
                y, last, starts = want
                grad_in = (rand(*y.shape) - 0.5, rand(*last.shape) - 0.5, *factors, keep, c, starts, block)
            else:
                grad_in = (rand(*want.shape) - 0.5, a, want, h0_v)
            want = [*(want if isinstance(want, (tuple, list)) else [want]), *getattr(ops, backward)(*grad_in)]
            got = [*(got if isinstance(got, (tuple, list)) else [got]), *impls[f"agalite::{backward}"](*grad_in)]
            for k, (u, v) in enumerate(zip(got, want)):
                if u.shape != v.shape or not torch.allclose(u, v, rtol=0, atol=atol):
                    return f"{name}: output {k} differs from the torch loop's"
    except Exception as e:  # noqa: BLE001  (any failure means: run the loops)
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


# the module's state and its functions enable(device_type="cpu"), disable, enabled and loops (fused_kernels.Kernels)
_kernels = fused_kernels.Kernels("agalite_kernels", OPS, "AGaLiTe's recurrences run as torch loops", CPP_FILE, CPP_FUNCTIONS,
                                 implementations=kernels)
enable, disable, enabled, loops = _kernels.enable, _kernels.disable, _kernels.enabled, _kernels.loops
