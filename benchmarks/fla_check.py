"""Does flash-linear-attention (fla-core 0.6.0) compute exactly what AGaLiTe's recurrences compute?

- agalite::key_readout (ppo_agalite.py): h_t[j] = a_t * h_{t-1}[j] + c_t[j] k'_t, y_t[j] = <h_t[j], query_t>,
  a_t = (1 - gamma_t) keep_t, is gated linear attention with state [K = eta*d, V = J = r+1]:
  fla.ops.gla.fused_recurrent_gla(q=query, k=k', v=c, gk=log a, scale=1).
- agalite::linear_recurrence: h_t = a_t * h_{t-1} + x_t element-wise = fla.ops.hgrn.fused_recurrent_hgrn(x, g=log a).
fla takes LOG gates, so an episode start (a = 0 exactly) needs gk = -inf.
Checked on CPU tensors in Triton's interpreter against float64 torch loops written here (the maths of
ppo_agalite.py's reference loops); errors also as multiples of the float32 floor (the same loop in float32):
GLA/HGRN forward and gradients, d/da = dgk / a, episode starts, float64 inputs, chunk_gla in the interpreter.

Setup (separate venv; fla-core --no-deps so that it keeps this torch), then run (~10 s, writes results/fla_check.md):
  python3 -m venv /tmp/fla_check/venv && /tmp/fla_check/venv/bin/pip install torch==2.13.0 "triton==3.9.*" numpy \
      einops packaging && /tmp/fla_check/venv/bin/pip install --no-deps fla-core==0.6.0
  TRITON_INTERPRET=1 OMP_NUM_THREADS=1 /tmp/fla_check/venv/bin/python benchmarks/fla_check.py
"""
import datetime
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported: CPU tensors, no GPU
warnings.filterwarnings("ignore")  # fla warns that the platform has no GPU
try:
    import torch
    import fla
    import triton
    from fla.ops.gla import chunk_gla, fused_recurrent_gla
    from fla.ops.hgrn import fused_recurrent_hgrn
except ImportError:
    sys.exit('fla not importable: pip install torch==2.13.0 "triton==3.9.*" einops packaging && pip install --no-deps fla-core==0.6.0')

B, H, T, K, V, D = 2, 2, 37, 8, 3, 24  # T not a multiple of any block size; K ~ eta*d, V = r+1; D for HGRN
SMALL = 1e-2  # gates below this are reported apart: d/da = dgk / a divides by them
lines = []


def out(s=""):
    print(s)
    lines.append(s)


def single_autotune_configs():
    """The interpreter would benchmark every autotune config (slowly, and timings mean nothing there): keep the
    first config of every fla kernel (monkeypatch of triton's Autotuner objects; numerics do not depend on it)."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("fla.ops"):
            for obj in list(vars(mod).values()):
                while obj is not None:
                    if isinstance(obj, triton.runtime.autotuner.Autotuner):
                        obj.configs = obj.configs[:1]
                    obj = getattr(obj, "fn", None)


def gla_loop(q, k, v, a, h0):
    """Reference: S_t = diag(a_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t; layout (B, T, H, K|V), S (B, H, K, V)."""
    h, o = h0, []
    for t in range(q.shape[1]):
        h = a[:, t, :, :, None] * h + k[:, t, :, :, None] * v[:, t, :, None, :]
        o.append((h * q[:, t, :, :, None]).sum(-2))
    return torch.stack(o, 1), h


def hgrn_loop(x, a, h0):
    """Reference: h_t = a_t * h_{t-1} + x_t (= ppo_agalite.linear_recurrence), layout (B, T, D)."""
    h, o = h0, []
    for t in range(x.shape[1]):
        h = a[:, t] * h + x[:, t]
        o.append(h)
    return torch.stack(o, 1), h


def randn(gen, *shape, dtype=torch.float64):
    return torch.randn(shape, generator=gen, dtype=dtype)  # always from the section's own seeded generator


def grads(outputs, inputs, upstream):
    return torch.autograd.grad(outputs, inputs, upstream, allow_unused=True)


def err(x, ref, mask=None):
    d = (x.double() - ref).abs()
    return (d[mask] if mask is not None else d).max().item()


def row(name, x, x32, ref, mask=None):
    """One table row: fla's error, the float32 floor, their ratio, fla vs the float32 loop, the reference's size."""
    e, f, d = err(x, ref, mask), err(x32, ref, mask), err(x, x32.double(), mask)
    r = (ref[mask] if mask is not None else ref).abs().max().item()
    out(f"| {name} | {e:.2e} | {f:.2e} | {e / f if f > 0 else float('inf'):.1f}x | {d:.2e} | {r:.2e} |")


def header(title):
    out(f"\n## {title}\n\n| quantity | fla err | f32 loop err (floor) | fla / floor | fla - f32 loop | max abs ref |"
        "\n|---|---|---|---|---|---|")


def gates(shape, gen):
    """Log-uniform gates in [1e-3, 1]: a third of them below 1e-2, where d/da = dgk / a divides by small a."""
    return 10 ** (-3 * torch.rand(shape, generator=gen, dtype=torch.float64))


def check_gla():
    gen = torch.Generator().manual_seed(0)
    q, k, v, a = randn(gen, B, T, H, K), randn(gen, B, T, H, K), randn(gen, B, T, H, V), gates((B, T, H, K), gen)
    h0, do, dht = randn(gen, B, H, K, V), randn(gen, B, T, H, V), randn(gen, B, H, K, V)
    # float64 reference and float32 floor, gradients straight wrt a (as our key_readout_backward computes d_a)
    ref, f32 = {}, {}
    for store, dt in [(ref, torch.float64), (f32, torch.float32)]:
        ins = [x.to(dt).requires_grad_() for x in (q, k, v, a, h0)]
        o, ht = gla_loop(*ins)
        gs = grads((o, ht), ins, (do.to(dt), dht.to(dt)))
        store.update(o=o.detach(), ht=ht.detach(), **dict(zip(["dq", "dk", "dv", "da", "dh0"], gs)))
        store["ada"] = ins[3].detach() * store["da"]  # = dL/d(log a)
    # fla in float32, gk = log a as the leaf: its gradient is fla's dgk = a * dL/da
    a32 = a.float()
    ins = [x.float().requires_grad_() for x in (q, k, v)] + [a32.log().requires_grad_(), h0.float().requires_grad_()]
    o, ht = fused_recurrent_gla(ins[0], ins[1], ins[2], gk=ins[3], scale=1.0, initial_state=ins[4], output_final_state=True)
    dq, dk, dv, dgk, dh0 = grads((o, ht), ins, (do.float(), dht.float()))
    header(f"1. GLA (fused_recurrent_gla) vs float64 loop: B={B} H={H} T={T} K={K} V={V}, float32")
    for name, x, key in [("o", o, "o"), ("final state", ht, "ht"), ("dq", dq, "dq"), ("dk", dk, "dk"), ("dv", dv, "dv"),
                         ("dh0", dh0, "dh0")]:
        row(name, x, f32[key], ref[key])
    return dgk, a32, f32, ref


def check_gate_grads(dgk, a32, f32, ref):
    """fla returns dgk = a * dL/da, formed as a reverse cumulative sum of q*dq - k*dk (differences of large terms);
    our operators need dL/da (d gamma = -keep * dL/da), which is dgk / a: the division amplifies dgk's error."""
    header(f"3. GLA gate gradients through fla's dgk (d/da = dgk / a), gates log-uniform in [{a32.min().item():.1e}, 1]")
    big, small = a32 >= SMALL, a32 < SMALL
    row("a*da (= dgk), all a", dgk, f32["ada"], ref["ada"])
    row(f"d/da, a >= {SMALL:g} ({big.sum().item()} gates)", dgk / a32, f32["da"], ref["da"], big)
    row(f"d/da, a < {SMALL:g} ({small.sum().item()} gates)", dgk / a32, f32["da"], ref["da"], small)


def check_hgrn():
    gen = torch.Generator().manual_seed(1)
    x, a, h0, do, dht = randn(gen, B, T, D), gates((B, T, D), gen), randn(gen, B, D), randn(gen, B, T, D), randn(gen, B, D)
    ref, f32 = {}, {}
    for store, dt in [(ref, torch.float64), (f32, torch.float32)]:
        ins = [t.to(dt).requires_grad_() for t in (x, a, h0)]
        o, ht = hgrn_loop(*ins)
        store.update(o=o.detach(), ht=ht.detach(), **dict(zip(["dx", "da", "dh0"], grads((o, ht), ins, (do.to(dt), dht.to(dt))))))
        store["ada"] = ins[1].detach() * store["da"]
    a32 = a.float()
    ins = [x.float().requires_grad_(), a32.log().requires_grad_(), h0.float().requires_grad_()]
    o, ht = fused_recurrent_hgrn(ins[0], ins[1], initial_state=ins[2], output_final_state=True)
    dx, dg, dh0 = grads((o, ht), ins, (do.float(), dht.float()))
    header(f"2. HGRN (fused_recurrent_hgrn) = linear_recurrence vs float64 loop: B={B} T={T} D={D}, float32")
    for name, t, key in [("h (all states)", o, "o"), ("final state", ht, "ht"), ("dx", dx, "dx"), ("dh0", dh0, "dh0"),
                         ("a*da (= dg)", dg, "ada")]:
        row(name, t, f32[key], ref[key])
    row(f"d/da = dg / a, a >= {SMALL:g}", dg / a32, f32["da"], ref["da"], a32 >= SMALL)
    row(f"d/da = dg / a, a < {SMALL:g}", dg / a32, f32["da"], ref["da"], a32 < SMALL)


def check_episode_starts():
    """Gates exactly 0 at episode starts (keep = 0), as a_t = (1 - gamma_t) keep_t in our model."""
    gen = torch.Generator().manual_seed(2)
    f32 = torch.float32
    q, k, v, h0 = (randn(gen, *shape, dtype=f32) for shape in [(B, T, H, K), (B, T, H, K), (B, T, H, V), (B, H, K, V)])
    gamma = torch.rand(B, T, H, K, generator=gen) * 0.98 + 0.01
    keep = (torch.rand(B, T, 1, 1, generator=gen) > 0.15).float().expand(B, T, H, K)  # starts mid-sequence
    do, dht = randn(gen, B, T, H, V, dtype=f32), randn(gen, B, H, K, V, dtype=f32)
    starts = keep == 0
    out(f"\n## 4. Episode starts ({starts.sum().item()} of {starts.numel()} gate entries exactly 0), float32\n")
    # (i) plain: gk = log(a) with a = (1 - gamma) keep; log(0) = -inf in the forward, 1/a = inf in the backward
    a = ((1 - gamma) * keep).requires_grad_()
    o, ht = fused_recurrent_gla(q, k, v, gk=a.log(), scale=1.0, initial_state=h0, output_final_state=True)
    (da,) = grads((o, ht), [a], (do, dht))
    bad = ~torch.isfinite(da)
    out(f"- (i) GLA, gk = log(a): non-finite output entries {(~torch.isfinite(o)).sum().item()}; non-finite d/da entries "
        f"{bad.sum().item()} ({(bad & starts).sum().item()} at starts, {(bad & ~starts).sum().item()} elsewhere)")
    # the same plain log gate on HGRN (our linear_recurrence resets the same way)
    ah = ((1 - gamma[..., 0, :]) * keep[..., 0, :]).requires_grad_()
    oh, hth = fused_recurrent_hgrn(k[..., 0, :], ah.log(), initial_state=h0[:, 0, :, 0], output_final_state=True)
    (dah,) = grads((oh, hth), [ah], (torch.ones_like(oh), torch.ones_like(hth)))
    out(f"- (i) HGRN, g = log(a): non-finite d/da entries {(~torch.isfinite(dah)).sum().item()} "
        f"of {(keep[..., 0, :] == 0).sum().item()} starts")
    # (ii) masked: gk = log1p(-gamma) where kept, -inf at starts; where's backward sends exactly 0 to the start entries
    g32 = gamma.clone().requires_grad_()
    gk = torch.where(keep > 0, torch.log1p(-g32), torch.tensor(-float("inf")))
    o, ht = fused_recurrent_gla(q, k, v, gk=gk, scale=1.0, initial_state=h0, output_final_state=True)
    (dgamma,) = grads((o, ht), [g32], (do, dht))
    ref = {}  # float64 reference and float32 floor: the loop with a = (1 - gamma) keep, as our key_readout
    for dt in (torch.float64, f32):
        gl = gamma.to(dt).requires_grad_()
        o_l, ht_l = gla_loop(q.to(dt), k.to(dt), v.to(dt), (1 - gl) * keep.to(dt), h0.to(dt))
        ref[dt] = (o_l.detach(), ht_l.detach(), *grads((o_l, ht_l), [gl], (do.to(dt), dht.to(dt))))
    o_ref, ht_ref, dgamma_ref = ref[torch.float64]
    out(f"- (ii) GLA, masked gk: non-finite d gamma entries {(~torch.isfinite(dgamma)).sum().item()}; nonzero d gamma at "
        f"starts {(dgamma[starts] != 0).sum().item()}; max abs err vs float64 (f32 loop floor): o {err(o, o_ref):.2e} "
        f"({err(ref[f32][0], o_ref):.2e}), final state {err(ht, ht_ref):.2e} ({err(ref[f32][1], ht_ref):.2e}), "
        f"d gamma {err(dgamma, dgamma_ref):.2e} ({err(ref[f32][2], dgamma_ref):.2e}); max abs d gamma "
        f"{dgamma_ref.abs().max().item():.2e}, gamma in [0.01, 0.99]")


def check_float64_and_chunk():
    gen = torch.Generator().manual_seed(3)
    q, k, v, h0 = randn(gen, B, T, H, K), randn(gen, B, T, H, K), randn(gen, B, T, H, V), randn(gen, B, H, K, V)
    a = gates((B, T, H, K), gen).clamp_min(0.5)  # moderate gates: this is about the dtype, not small a
    o_ref, ht_ref = gla_loop(q, k, v, a, h0)
    qq = q.clone().requires_grad_()
    o, ht = fused_recurrent_gla(qq, k, v, gk=a.log(), scale=1.0, initial_state=h0, output_final_state=True)
    (dq,) = grads((o, ht), [qq], (torch.ones_like(o), torch.zeros_like(ht)))
    (dq_ref,) = grads((gla_loop(qq, k, v, a, h0)[0],), [qq], (torch.ones_like(o),))
    out(f"\n## 5. float64 inputs to fused_recurrent_gla\n\n- returns o {o.dtype}, final state {ht.dtype}, dq {dq.dtype}; "
        f"max abs err vs float64 loop: o {err(o, o_ref):.2e}, final state {err(ht, ht_ref):.2e}, dq {err(dq, dq_ref):.2e} "
        f"(float64 itself would be ~1e-15)")
    out("\n## 6. chunk_gla in Triton's interpreter\n")
    try:
        o, ht = chunk_gla(q.float(), k.float(), v.float(), g=a.log().float(), scale=1.0, initial_state=h0.float(),
                          output_final_state=True)
        out(f"- runs; max abs err vs float64 loop: o {err(o, o_ref):.2e}, final state {err(ht, ht_ref):.2e}")
    except Exception as e:  # report the failure in one line, not a traceback
        msg = " ".join(str(e).split())
        out(f"- fails: `{type(e).__name__}: {msg[:300]}`")


if __name__ == "__main__":
    torch.set_num_threads(1)
    single_autotune_configs()
    out("# fla (flash-linear-attention) vs AGaLiTe's recurrences, Triton interpreter on CPU\n")
    out("Command: `TRITON_INTERPRET=1 OMP_NUM_THREADS=1 /tmp/fla_check/venv/bin/python benchmarks/fla_check.py`  ")
    out(f"torch {torch.__version__}, triton {triton.__version__}, fla {fla.__version__}, {datetime.date.today()}. "
        "Autotune restricted to each kernel's first config. Errors are max abs vs a float64 torch loop; the floor is "
        "the same loop run in float32.")
    gate_results = check_gla()
    check_hgrn()
    check_gate_grads(*gate_results)
    check_episode_starts()
    check_float64_and_chunk()
    path = Path(__file__).resolve().parent / "results" / "fla_check.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {path}")
