"""Triton kernels for AGaLiTe's recurrence operators on a GPU; registered for "cuda" by agalite_kernels.enable.

The specification is ppo_agalite.py's torch loops (key_readout, key_readout_backward, linear_recurrence,
linear_recurrence_backward, and their docstrings); these kernels were written from those equations. Importing
this module needs triton. With TRITON_INTERPRET=1 set before the import, Triton's interpreter runs the same
kernels on CPU tensors (tests/test_kernels.py does, at small sizes).

key_readout: one program per (sequence n, row j, block of BE eta-rows x all d features), i.e. one tile of the
eta*d features of one of the J = r + 1 state rows; the state tile stays in registers over the T steps, and
query_t, a_t and k'_t are formed in registers from their factors. The forward writes the read-outs (partial
sums over the feature blocks), the last state and the block starts. The backward walks the blocks from the
last: it rebuilds the block's states from its start into a scratch buffer (block x tile per program), then
runs the adjoint backwards in time, reducing each step's eta*d gradients to the eta- and d-sized factors'
(partial sums over rows and feature blocks, summed afterwards). linear_recurrence: one program per (row,
block of features), the same pattern without the read-out.
"""

import torch
import triton
import triton.language as tl

from agalite_kernels import _gate_layout, _key_inputs, _like


@triton.jit
def _key_vectors(qu, qw, gu, gw, ku, kw, keep, tn, e, i, me, mi, ETA, D):
    """The factors of step/sequence tn, and a_t, k'_t, query_t of the tile (e rows x i columns)."""
    u_q = tl.load(qu + tn * ETA + e, mask=me, other=0.0)
    w_q = tl.load(qw + tn * D + i, mask=mi, other=0.0)
    u_g = tl.load(gu + tn * ETA + e, mask=me, other=0.0)
    w_g = tl.load(gw + tn * D + i, mask=mi, other=0.0)
    u_k = tl.load(ku + tn * ETA + e, mask=me, other=0.0)
    w_k = tl.load(kw + tn * D + i, mask=mi, other=0.0)
    kp = tl.load(keep + tn)
    a = (1 - w_g[None, :] * u_g[:, None]) * kp  # a_t = (1 - gamma_t)(1 - done_t)
    k_in = w_k[None, :] * u_k[:, None]  # k'_t
    q = w_q[None, :] * u_q[:, None]  # query_t
    return u_q, w_q, u_g, w_g, u_k, w_k, kp, a, k_in, q


@triton.jit
def _tile(ETA, D, BE: tl.constexpr, BD: tl.constexpr):
    """This program's sequence n, state row j and block eb of eta-rows; the tile's row and column indices e, i,
    their masks, and the offsets f of its (e, i) entries within one sequence's (J, F = eta*d) state."""
    n = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64)
    eb = tl.program_id(2).to(tl.int64)
    e = eb * BE + tl.arange(0, BE)
    i = tl.arange(0, BD)
    me, mi = e < ETA, i < D
    m2 = me[:, None] & mi[None, :]
    F = ETA * D
    f = j * F + e[:, None] * D + i[None, :]
    return n, j, eb, e, i, me, mi, m2, F, f


@triton.jit
def _key_readout_fwd(qu, qw, gu, gw, ku, kw, keep, c, h0, y_part, last, starts, T, N, J, ETA, D, BLOCK,
                     BE: tl.constexpr, BD: tl.constexpr):
    n, j, eb, e, i, me, mi, m2, F, f = _tile(ETA, D, BE, BD)
    h = tl.load(h0 + n * J * F + f, mask=m2, other=0.0)
    for t in range(0, T):
        if t % BLOCK == 0:
            tl.store(starts + ((t // BLOCK) * N + n) * J * F + f, h, mask=m2)
        tn = t * N + n
        _, _, _, _, _, _, _, a, k_in, q = _key_vectors(qu, qw, gu, gw, ku, kw, keep, tn, e, i, me, mi, ETA, D)
        cj = tl.load(c + tn * J + j)
        h = a * h + cj * k_in  # h_t[j] = a_t h_{t-1}[j] + c_t[j] k'_t
        y = tl.sum(tl.sum(h * q, axis=1), axis=0)  # this tile's part of <h_t[j], query_t>
        tl.store(y_part + ((eb * T + t) * N + n) * J + j, y)
    tl.store(last + n * J * F + f, h, mask=m2)


@triton.jit
def _key_readout_bwd(dy, dh_last, qu, qw, gu, gw, ku, kw, keep, c, starts, scratch, du_part, dw_part, dh0, T, N, J,
                     ETA, D, BLOCK, NB, NEB, BE: tl.constexpr, BD: tl.constexpr):
    n, j, eb, e, i, me, mi, m2, F, f = _tile(ETA, D, BE, BD)
    tile = tl.arange(0, BE)[:, None] * BD + i[None, :]  # offsets in this program's scratch, one tile per step
    sbase = scratch + ((n * J + j) * NEB + eb) * BLOCK * BE * BD
    # carry = a_{t+1} G_{t+1} (dL/dh_t through the later steps); before the last step, dL/dh_{T-1}
    carry = tl.load(dh_last + n * J * F + f, mask=m2, other=0.0)
    for bb in range(0, NB):
        b = NB - 1 - bb
        s = b * BLOCK
        L = tl.minimum(BLOCK, T - s)
        start = tl.load(starts + (b * N + n) * J * F + f, mask=m2, other=0.0)
        h = start
        for cc in range(0, L):  # rebuild the block's states from its start
            tn = (s + cc) * N + n
            _, _, _, _, _, _, _, a, k_in, q = _key_vectors(qu, qw, gu, gw, ku, kw, keep, tn, e, i, me, mi, ETA, D)
            h = a * h + tl.load(c + tn * J + j) * k_in
            tl.store(sbase + cc * BE * BD + tile, h)
        tl.debug_barrier()
        for cc in range(0, L):  # the adjoint, backwards in time
            ci = L - 1 - cc
            t = s + ci
            tn = t * N + n
            u_q, w_q, u_g, w_g, u_k, w_k, kp, a, k_in, q = _key_vectors(qu, qw, gu, gw, ku, kw, keep, tn, e, i, me, mi,
                                                                        ETA, D)
            ht = tl.load(sbase + ci * BE * BD + tile)
            hp = tl.where(ci > 0, tl.load(sbase + tl.maximum(ci - 1, 0) * BE * BD + tile), start)
            dyj = tl.load(dy + tn * J + j)
            cj = tl.load(c + tn * J + j)
            G = dyj * q + carry  # G_t[j] = dL/dh_t[j]
            d_q = dyj * ht  # row j's term of dL/dquery_t
            d_g = -kp * (G * hp)  # of dL/dgamma_t = -keep dL/da_t, dL/da_t = sum_j G_t[j] h_{t-1}[j]
            d_k = cj * G  # of dL/dk'_t = sum_j c_t[j] G_t[j]
            carry = a * G
            # through the outer products (outer_backward): partial sums over this row and feature block
            ub = (j * T + t) * N + n  # du_part (3, J, T, N, eta); dw_part (3, J * NEB, T, N, d)
            wb = ((j * NEB + eb) * T + t) * N + n
            su, sw = J * T * N * ETA, J * NEB * T * N * D
            tl.store(du_part + ub * ETA + e, tl.sum(d_q * w_q[None, :], axis=1), mask=me)
            tl.store(dw_part + wb * D + i, tl.sum(d_q * u_q[:, None], axis=0), mask=mi)
            tl.store(du_part + su + ub * ETA + e, tl.sum(d_g * w_g[None, :], axis=1), mask=me)
            tl.store(dw_part + sw + wb * D + i, tl.sum(d_g * u_g[:, None], axis=0), mask=mi)
            tl.store(du_part + 2 * su + ub * ETA + e, tl.sum(d_k * w_k[None, :], axis=1), mask=me)
            tl.store(dw_part + 2 * sw + wb * D + i, tl.sum(d_k * u_k[:, None], axis=0), mask=mi)
        tl.debug_barrier()
    tl.store(dh0 + n * J * F + f, carry, mask=m2)


def _tiles(eta, d, programs):
    """(BE, BD): tiles of BE eta-rows x all d features (BD = d rounded up to a power of 2); smaller tiles when
    there are few (sequence, row) programs, so that more of them run at once."""
    BD = triton.next_power_of_2(d)
    BE = triton.next_power_of_2(eta)
    while BE > 1 and (BE * BD > 4096 or (programs * triton.cdiv(eta, BE) < 1024 and BE * BD > 128)):
        BE //= 2
    return BE, BD


def key_readout_triton(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, h0, block=8):
    """agalite::key_readout (ppo_agalite.key_readout) in Triton."""
    factors, keep_, c_ = _key_inputs(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, h0.dtype)
    T, N, J = c_.shape
    eta, d = factors[0].shape[-1], factors[1].shape[-1]
    BE, BD = _tiles(eta, d, N * J)
    NEB, NB = triton.cdiv(eta, BE), triton.cdiv(T, block)
    h0_ = h0.reshape(N, J, eta * d).contiguous()
    y_part = h0.new_empty((NEB, T, N, J))
    last, starts = torch.empty_like(h0_), h0.new_empty((NB, N, J, eta * d))
    _key_readout_fwd[(N, J, NEB)](*factors, keep_, c_, h0_, y_part, last, starts, T, N, J, eta, d, block, BE=BE, BD=BD)
    return y_part.sum(0).view(c.shape), last.view(h0.shape), starts.view((NB,) + h0.shape)


def key_readout_backward_triton(dy, dh_last, query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, starts, block):
    """agalite::key_readout_backward (ppo_agalite.key_readout_backward) in Triton."""
    dtype = starts.dtype
    factors, keep_, c_ = _key_inputs(query_u, query_w, gamma_u, gamma_w, k_u, k_w, keep, c, dtype)
    T, N, J = c_.shape
    eta, d = factors[0].shape[-1], factors[1].shape[-1]
    BE, BD = _tiles(eta, d, N * J)
    NEB, NB = triton.cdiv(eta, BE), starts.shape[0]
    dy_ = dy.expand(c.shape).reshape(T, N, J).to(dtype).contiguous()
    dh_last_ = dh_last.reshape(N, J, eta * d).to(dtype).contiguous()
    starts_ = starts.reshape(NB, N, J, eta * d).contiguous()
    scratch = starts.new_empty((N, J, NEB, block, BE * BD))
    du_part = starts.new_empty((3, J, T, N, eta))
    dw_part = starts.new_empty((3, J * NEB, T, N, d))
    dh0 = torch.empty_like(dh_last_)
    _key_readout_bwd[(N, J, NEB)](dy_, dh_last_, *factors, keep_, c_, starts_, scratch, du_part, dw_part, dh0, T, N, J,
                                  eta, d, block, NB, NEB, BE=BE, BD=BD)
    du, dw = du_part.sum(1), dw_part.sum(1)  # (3, T, N, eta), (3, T, N, d)
    grads = [du[0], dw[0], du[1], dw[1], du[2], dw[2], dh0]
    refs = (query_u, query_w, gamma_u, gamma_w, k_u, k_w, dh_last)
    return [_like(g.to(ref.dtype).contiguous(), ref) for g, ref in zip(grads, refs)]


@triton.jit
def _linear_recurrence_fwd(a, x, h0, h, T, P, R, Q, BQ: tl.constexpr):
    pr = tl.program_id(0).to(tl.int64)
    p, r = pr // R, pr % R
    q = tl.program_id(1).to(tl.int64) * BQ + tl.arange(0, BQ)
    m = q < Q
    state = tl.load(h0 + pr * Q + q, mask=m, other=0.0)
    for t in range(0, T):
        a_t = tl.load(a + (t * P + p) * Q + q, mask=m, other=0.0)
        x_t = tl.load(x + (t * P * R + pr) * Q + q, mask=m, other=0.0)
        state = x_t + a_t * state
        tl.store(h + (t * P * R + pr) * Q + q, state, mask=m)


@triton.jit
def _linear_recurrence_bwd(dh, a, h, h0, da_part, dx, dh0, T, P, R, Q, BQ: tl.constexpr):
    pr = tl.program_id(0).to(tl.int64)
    p, r = pr // R, pr % R
    q = tl.program_id(1).to(tl.int64) * BQ + tl.arange(0, BQ)
    m = q < Q
    carry = tl.zeros([BQ], dtype=h0.dtype.element_ty)  # a_{t+1} G_{t+1}
    for tt in range(0, T):
        t = T - 1 - tt
        g = tl.load(dh + (t * P * R + pr) * Q + q, mask=m, other=0.0) + carry  # G_t
        prev = tl.where(t > 0, tl.load(h + (tl.maximum(t - 1, 0) * P * R + pr) * Q + q, mask=m, other=0.0),
                        tl.load(h0 + pr * Q + q, mask=m, other=0.0))
        tl.store(dx + (t * P * R + pr) * Q + q, g, mask=m)
        tl.store(da_part + ((r * T + t) * P + p) * Q + q, g * prev, mask=m)  # summed over r afterwards
        carry = tl.load(a + (t * P + p) * Q + q, mask=m, other=0.0) * g
    tl.store(dh0 + pr * Q + q, carry, mask=m)


def _recurrence_layout(a, x):
    layout = _gate_layout(a, x)
    if layout is None:
        a, layout = a.expand_as(x), (x[0].numel() // x.shape[-1], 1, x.shape[-1])
    return a, layout


def linear_recurrence_triton(a, x, h0):
    """agalite::linear_recurrence (ppo_agalite.linear_recurrence) in Triton."""
    T = x.shape[0]
    a, (P, R, Q) = _recurrence_layout(a, x)
    x_ = x.reshape(T, P, R, Q).contiguous()
    h = torch.empty_like(x_)
    BQ = min(triton.next_power_of_2(Q), 1024)
    _linear_recurrence_fwd[(P * R, triton.cdiv(Q, BQ))](
        a.to(x.dtype).reshape(T, P, Q).contiguous(), x_, h0.expand(x.shape[1:]).to(x.dtype).reshape(P, R, Q).contiguous(),
        h, T, P, R, Q, BQ=BQ)
    return _like(h, x)


def linear_recurrence_backward_triton(dh, a, h, h0):
    """agalite::linear_recurrence_backward (ppo_agalite.linear_recurrence_backward) in Triton."""
    T, a_in = h.shape[0], a
    a, (P, R, Q) = _recurrence_layout(a, h)
    h_ = h.reshape(T, P, R, Q).contiguous()
    da_part, dx, dh0 = h.new_empty((R, T, P, Q)), torch.empty_like(h_), h.new_empty((P, R, Q))
    BQ = min(triton.next_power_of_2(Q), 1024)
    _linear_recurrence_bwd[(P * R, triton.cdiv(Q, BQ))](
        dh.to(h.dtype).reshape(T, P, R, Q).contiguous(), a.to(h.dtype).reshape(T, P, Q).contiguous(), h_,
        h0.expand(h.shape[1:]).to(h.dtype).reshape(P, R, Q).contiguous(), da_part, dx, dh0, T, P, R, Q, BQ=BQ)
    da = da_part.sum(0).view(a.shape).sum_to_size(a_in.shape).to(a_in.dtype)
    return [_like(da.contiguous(), a_in), _like(dx, h), _like(dh0.view(h.shape[1:]).sum_to_size(h0.shape).to(h0.dtype), h0)]


KERNELS = {
    "agalite::key_readout": key_readout_triton,
    "agalite::key_readout_backward": key_readout_backward_triton,
    "agalite::linear_recurrence": linear_recurrence_triton,
    "agalite::linear_recurrence_backward": linear_recurrence_backward_triton,
}
