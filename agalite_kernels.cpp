// Fused CPU kernels for the recurrence operators of ppo_agalite.py (agalite::key_readout, its backward,
// agalite::linear_recurrence and its backward), built and registered for the CPU by agalite_kernels.py.
//
// They compute exactly what the readable torch loops in ppo_agalite.py compute (key_readout,
// key_readout_backward, linear_recurrence, linear_recurrence_backward and their docstrings are the
// specification; written from those equations, not from any other implementation), in one pass per
// sequence and head instead of ~10 small tensor operations per step. What makes key_readout fast is that the
// eta*d-sized vectors query_t, a_t = (1 - gamma_t)(1 - done_t) and k'_t are never materialised: each is formed
// from its eta- and d-sized factors inside the loop over features (u[e] * w[i] for feature f = e*d + i), one
// d-sized row at a time, while that row of the J states is in registers or L1.
//
// Layouts (the Python wrappers flatten the batch dims N and make everything contiguous):
//   factors u (T, N, eta), w (T, N, d); keep (T, N); c (T, N, J); states (N, J, eta*d); y (T, N, J);
//   block starts (ceil(T / block), N, J, eta*d). linear_recurrence: x, h (T, P, R, Q), a (T, P, Q), the gate
//   broadcast over the R dims (AGaLiTe's value side: one gate for the r oscillator rows), h0 (P, R, Q).
// Sequences (n) are independent: they are split over torch's intra-op threads (at::parallel_for).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

// h_t[j] = a_t * h_{t-1}[j] + c_t[j] k'_t for every row j and feature f = e*d + i, from h_{t-1} = prev, into
// next (another array), and the read-outs y_t[j] = <h_t[j], query_t> when y is not null. The reductions are
// `omp simd` ones: vectorised (in lanes, then summed), which is a reassociation of the sums, within rounding.
template <typename scalar_t>
inline void key_step(const scalar_t* __restrict__ qu, const scalar_t* __restrict__ qw, const scalar_t* __restrict__ gu,
                     const scalar_t* __restrict__ gw, const scalar_t* __restrict__ ku, const scalar_t* __restrict__ kw,
                     scalar_t keep, const scalar_t* __restrict__ c, const scalar_t* __restrict__ prev,
                     scalar_t* __restrict__ next, scalar_t* __restrict__ y,
                     int64_t J, int64_t eta, int64_t d, scalar_t* __restrict__ A, scalar_t* __restrict__ K,
                     scalar_t* __restrict__ Q) {
  const int64_t F = eta * d;
  for (int64_t j = 0; j < J && y; ++j) y[j] = 0;
  for (int64_t e = 0; e < eta; ++e) {
    const scalar_t ge = gu[e], ke = ku[e], qe = qu[e];
    for (int64_t i = 0; i < d; ++i) {
      A[i] = (1 - gw[i] * ge) * keep;  // a_t = (1 - gamma_t)(1 - done_t)
      K[i] = kw[i] * ke;               // k'_t
      Q[i] = qw[i] * qe;               // query_t
    }
    for (int64_t j = 0; j < J; ++j) {
      const scalar_t* __restrict__ hp = prev + j * F + e * d;
      scalar_t* __restrict__ hn = next + j * F + e * d;
      const scalar_t cj = c[j];
      if (y) {
        scalar_t s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < d; ++i) {
          const scalar_t v = A[i] * hp[i] + cj * K[i];
          hn[i] = v;
          s += v * Q[i];
        }
        y[j] += s;
      } else {
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) hn[i] = A[i] * hp[i] + cj * K[i];
      }
    }
  }
}

template <typename scalar_t>
void key_readout_forward_impl(const scalar_t* qu, const scalar_t* qw, const scalar_t* gu, const scalar_t* gw,
                              const scalar_t* ku, const scalar_t* kw, const scalar_t* keep, const scalar_t* c,
                              const scalar_t* h0, scalar_t* y, scalar_t* last, scalar_t* starts, int64_t T, int64_t N,
                              int64_t J, int64_t eta, int64_t d, int64_t block) {
  const int64_t F = eta * d;
  at::parallel_for(0, N, 1, [&](int64_t n_begin, int64_t n_end) {
    std::vector<scalar_t> A(d), K(d), Q(d), other(J * F);
    for (int64_t n = n_begin; n < n_end; ++n) {
      // the state alternates between two arrays, the output `last` holding h_{T-1} at the end
      scalar_t* h = (T % 2 == 0) ? last + n * J * F : other.data();
      scalar_t* h_next = (T % 2 == 0) ? other.data() : last + n * J * F;
      std::copy(h0 + n * J * F, h0 + (n + 1) * J * F, h);
      for (int64_t t = 0; t < T; ++t) {
        if (t % block == 0) std::copy(h, h + J * F, starts + ((t / block) * N + n) * J * F);
        const int64_t tn = t * N + n;
        key_step(qu + tn * eta, qw + tn * d, gu + tn * eta, gw + tn * d, ku + tn * eta, kw + tn * d, keep[tn],
                 c + tn * J, h, h_next, y + tn * J, J, eta, d, A.data(), K.data(), Q.data());
        std::swap(h, h_next);
      }
    }
  });
}

// dL/du[e] += sum_i g[e*d + i] w[i] * scale and dL/dw[i] = sum_e g[e*d + i] u[e] * scale (outer_backward).
template <typename scalar_t>
inline void outer_backward(const scalar_t* __restrict__ g, const scalar_t* __restrict__ u,
                           const scalar_t* __restrict__ w, scalar_t scale, scalar_t* __restrict__ du,
                           scalar_t* __restrict__ dw, int64_t eta, int64_t d) {
  for (int64_t i = 0; i < d; ++i) dw[i] = 0;
  for (int64_t e = 0; e < eta; ++e) {
    const scalar_t* ge = g + e * d;
    scalar_t s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; ++i) s += ge[i] * w[i];
    du[e] = s * scale;
    const scalar_t ue = u[e] * scale;
    for (int64_t i = 0; i < d; ++i) dw[i] += ge[i] * ue;
  }
}

// The adjoint at step t: G_j = dL/dh_t[j] = dy_t[j] query_t + a_{t+1} G_{t+1}[j] (the second term is carry_j), the
// sums over rows j of the gradients' terms, and carry_j = a_t G_j for step t - 1. Row by row (rows are F apart in
// ht, hp and carry): contiguous streams, vectorised (faster here than all rows at once, feature by feature).
template <typename scalar_t>
inline void adjoint_step(const scalar_t* dy, const scalar_t* c, const scalar_t* __restrict__ A,
                         const scalar_t* __restrict__ Q, const scalar_t* ht, const scalar_t* hp, scalar_t* carry,
                         scalar_t* __restrict__ dq, scalar_t* __restrict__ da, scalar_t* __restrict__ dk, int64_t J,
                         int64_t F) {
  for (int64_t j = 0; j < J; ++j) {
    const scalar_t dyj = dy[j], cj = c[j];
    const scalar_t *__restrict__ htj = ht + j * F, *__restrict__ hpj = hp + j * F;
    scalar_t* __restrict__ Gj = carry + j * F;
    if (j == 0) {
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) {
        const scalar_t G = dyj * Q[f] + Gj[f];
        dq[f] = dyj * htj[f];  // dL/dquery_t = sum_j dy_t[j] h_t[j]
        da[f] = G * hpj[f];    // dL/da_t = sum_j G_t[j] h_{t-1}[j]
        dk[f] = cj * G;        // dL/dk'_t = sum_j c_t[j] G_t[j]
        Gj[f] = A[f] * G;      // a_t G_t, for step t - 1
      }
    } else {
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) {
        const scalar_t G = dyj * Q[f] + Gj[f];
        dq[f] += dyj * htj[f];
        da[f] += G * hpj[f];
        dk[f] += cj * G;
        Gj[f] = A[f] * G;
      }
    }
  }
}

template <typename scalar_t>
void key_readout_backward_impl(const scalar_t* dy, const scalar_t* dh_last, const scalar_t* qu, const scalar_t* qw,
                               const scalar_t* gu, const scalar_t* gw, const scalar_t* ku, const scalar_t* kw,
                               const scalar_t* keep, const scalar_t* c, const scalar_t* starts, scalar_t* dqu,
                               scalar_t* dqw, scalar_t* dgu, scalar_t* dgw, scalar_t* dku, scalar_t* dkw,
                               scalar_t* dh0, int64_t T, int64_t N, int64_t J, int64_t eta, int64_t d, int64_t block) {
  const int64_t F = eta * d, n_blocks = (T + block - 1) / block;
  at::parallel_for(0, N, 1, [&](int64_t n_begin, int64_t n_end) {
    std::vector<scalar_t> states(block * J * F), A(F), Q(F), dq(F), da(F), dk(F), tmp(3 * d);
    for (int64_t n = n_begin; n < n_end; ++n) {
      // carry = a_{t+1} G_{t+1} (dL/dh_t through the steps after t); before the last step, dL/dh_{T-1} from the
      // state carried out of the chunk. It lives in the output dh0, which it equals at the end (a_0 G_0).
      scalar_t* carry = dh0 + n * J * F;
      std::copy(dh_last + n * J * F, dh_last + (n + 1) * J * F, carry);
      for (int64_t b = n_blocks - 1; b >= 0; --b) {
        const int64_t s = b * block, e = std::min(s + block, T);
        const scalar_t* start = starts + (b * N + n) * J * F;
        // rebuild the block's states h_s .. h_{e-1} from its start
        for (int64_t t = s; t < e; ++t) {
          const int64_t tn = t * N + n;
          const scalar_t* prev = t == s ? start : states.data() + (t - s - 1) * J * F;
          key_step(qu + tn * eta, qw + tn * d, gu + tn * eta, gw + tn * d, ku + tn * eta, kw + tn * d, keep[tn],
                   c + tn * J, prev, states.data() + (t - s) * J * F, (scalar_t*)nullptr, J, eta, d, tmp.data(),
                   tmp.data() + d, tmp.data() + 2 * d);
        }
        // the adjoint, backwards in time: G_t[j] = dy_t[j] query_t + a_{t+1} G_{t+1}[j]
        for (int64_t t = e - 1; t >= s; --t) {
          const int64_t tn = t * N + n;
          const scalar_t *qu_t = qu + tn * eta, *qw_t = qw + tn * d, *gu_t = gu + tn * eta, *gw_t = gw + tn * d;
          const scalar_t keep_t = keep[tn];
          for (int64_t ee = 0; ee < eta; ++ee) {
            for (int64_t i = 0; i < d; ++i) {
              A[ee * d + i] = (1 - gw_t[i] * gu_t[ee]) * keep_t;
              Q[ee * d + i] = qw_t[i] * qu_t[ee];
            }
          }
          const scalar_t* ht = states.data() + (t - s) * J * F;
          const scalar_t* hp = t == s ? start : ht - J * F;
          adjoint_step(dy + tn * J, c + tn * J, A.data(), Q.data(), ht, hp, carry, dq.data(), da.data(), dk.data(), J, F);
          // the factors' gradients through the outer products; a = (1 - gamma) keep, so dL/dgamma = -keep dL/da
          outer_backward(dq.data(), qu_t, qw_t, scalar_t(1), dqu + tn * eta, dqw + tn * d, eta, d);
          outer_backward(da.data(), gu_t, gw_t, -keep_t, dgu + tn * eta, dgw + tn * d, eta, d);
          outer_backward(dk.data(), ku + tn * eta, kw + tn * d, scalar_t(1), dku + tn * eta, dkw + tn * d, eta, d);
        }
      }
    }
  });
}

template <typename scalar_t>
void linear_recurrence_forward_impl(const scalar_t* a, const scalar_t* x, const scalar_t* h0, scalar_t* h, int64_t T,
                                    int64_t P, int64_t R, int64_t Q) {
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* __restrict__ at_ = a + (t * P + p) * Q;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t off = ((t * P + p) * R + r) * Q;
          const scalar_t* __restrict__ prev = t ? h + off - P * R * Q : h0 + (p * R + r) * Q;
          const scalar_t* __restrict__ xt = x + off;
          scalar_t* __restrict__ ht = h + off;
#pragma omp simd
          for (int64_t q = 0; q < Q; ++q) ht[q] = xt[q] + at_[q] * prev[q];
        }
      }
    }
  });
}

template <typename scalar_t>
void linear_recurrence_backward_impl(const scalar_t* dh, const scalar_t* a, const scalar_t* h, const scalar_t* h0,
                                     scalar_t* da, scalar_t* dx, scalar_t* dh0, int64_t T, int64_t P, int64_t R,
                                     int64_t Q) {
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      scalar_t* carry = dh0 + p * R * Q;  // a_{t+1} G_{t+1}; a_0 G_0 = dL/dh0 at the end
      std::fill(carry, carry + R * Q, scalar_t(0));
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* __restrict__ at_ = a + (t * P + p) * Q;
        scalar_t* __restrict__ dat = da + (t * P + p) * Q;
        std::fill(dat, dat + Q, scalar_t(0));
        for (int64_t r = 0; r < R; ++r) {
          const int64_t off = ((t * P + p) * R + r) * Q;
          const scalar_t* __restrict__ prev = t ? h + off - P * R * Q : h0 + (p * R + r) * Q;
          const scalar_t* __restrict__ dht = dh + off;
          scalar_t *__restrict__ dxt = dx + off, *__restrict__ G = carry + r * Q;
#pragma omp simd
          for (int64_t q = 0; q < Q; ++q) {
            const scalar_t g = dht[q] + G[q];  // G_t
            dxt[q] = g;
            dat[q] += g * prev[q];  // summed over the R rows the gate is shared by
            G[q] = at_[q] * g;      // a_t G_t, for step t - 1
          }
        }
      }
    }
  });
}

void check(const torch::Tensor& x, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "agalite_kernels: ", name, " must be a contiguous CPU tensor");
  TORCH_CHECK(x.scalar_type() == like.scalar_type(), "agalite_kernels: ", name, " has dtype ", x.scalar_type(),
              ", expected ", like.scalar_type());
}

}  // namespace

// (T, N, eta/d) factors, keep (T, N), c (T, N, J), h0 (N, J, eta*d) -> y (T, N, J), last state, block starts
std::vector<torch::Tensor> key_readout_forward(torch::Tensor qu, torch::Tensor qw, torch::Tensor gu, torch::Tensor gw,
                                               torch::Tensor ku, torch::Tensor kw, torch::Tensor keep, torch::Tensor c,
                                               torch::Tensor h0, int64_t block) {
  const int64_t T = c.size(0), N = c.size(1), J = c.size(2), eta = qu.size(2), d = qw.size(2);
  TORCH_CHECK(block >= 1 && h0.size(0) == N && h0.size(1) == J && h0.size(2) == eta * d, "agalite_kernels: bad sizes");
  for (auto* x : {&qu, &qw, &gu, &gw, &ku, &kw, &keep, &c}) check(*x, h0, "an input");
  check(h0, h0, "h0");
  auto y = torch::empty({T, N, J}, h0.options());
  auto last = torch::empty_like(h0);
  auto starts = torch::empty({(T + block - 1) / block, N, J, eta * d}, h0.options());
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "agalite_key_readout_forward", [&] {
    key_readout_forward_impl<scalar_t>(qu.data_ptr<scalar_t>(), qw.data_ptr<scalar_t>(), gu.data_ptr<scalar_t>(),
                                       gw.data_ptr<scalar_t>(), ku.data_ptr<scalar_t>(), kw.data_ptr<scalar_t>(),
                                       keep.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                                       y.data_ptr<scalar_t>(), last.data_ptr<scalar_t>(), starts.data_ptr<scalar_t>(),
                                       T, N, J, eta, d, block);
  });
  return {y, last, starts};
}

// -> gradients of qu, qw, gu, gw, ku, kw (their layouts) and of h0
std::vector<torch::Tensor> key_readout_backward(torch::Tensor dy, torch::Tensor dh_last, torch::Tensor qu,
                                                torch::Tensor qw, torch::Tensor gu, torch::Tensor gw, torch::Tensor ku,
                                                torch::Tensor kw, torch::Tensor keep, torch::Tensor c,
                                                torch::Tensor starts, int64_t block) {
  const int64_t T = c.size(0), N = c.size(1), J = c.size(2), eta = qu.size(2), d = qw.size(2);
  TORCH_CHECK(block >= 1 && starts.size(0) == (T + block - 1) / block, "agalite_kernels: bad block starts");
  for (auto* x : {&dy, &dh_last, &qu, &qw, &gu, &gw, &ku, &kw, &keep, &c}) check(*x, starts, "an input");
  check(starts, starts, "starts");
  auto dqu = torch::empty_like(qu), dqw = torch::empty_like(qw), dgu = torch::empty_like(gu);
  auto dgw = torch::empty_like(gw), dku = torch::empty_like(ku), dkw = torch::empty_like(kw);
  auto dh0 = torch::empty_like(dh_last);
  AT_DISPATCH_FLOATING_TYPES(starts.scalar_type(), "agalite_key_readout_backward", [&] {
    key_readout_backward_impl<scalar_t>(
        dy.data_ptr<scalar_t>(), dh_last.data_ptr<scalar_t>(), qu.data_ptr<scalar_t>(), qw.data_ptr<scalar_t>(),
        gu.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(), ku.data_ptr<scalar_t>(), kw.data_ptr<scalar_t>(),
        keep.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), starts.data_ptr<scalar_t>(), dqu.data_ptr<scalar_t>(),
        dqw.data_ptr<scalar_t>(), dgu.data_ptr<scalar_t>(), dgw.data_ptr<scalar_t>(), dku.data_ptr<scalar_t>(),
        dkw.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>(), T, N, J, eta, d, block);
  });
  return {dqu, dqw, dgu, dgw, dku, dkw, dh0};
}

// h_t = a_t * h_{t-1} + x_t: a (T, P, Q) broadcast over R, x (T, P, R, Q), h0 (P, R, Q) -> h (T, P, R, Q)
torch::Tensor linear_recurrence_forward(torch::Tensor a, torch::Tensor x, torch::Tensor h0) {
  const int64_t T = x.size(0), P = x.size(1), R = x.size(2), Q = x.size(3);
  TORCH_CHECK(a.size(0) == T && a.size(1) == P && a.size(2) == Q && h0.numel() == P * R * Q, "agalite_kernels: bad sizes");
  check(a, x, "a");
  check(h0, x, "h0");
  check(x, x, "x");
  auto h = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "agalite_linear_recurrence_forward", [&] {
    linear_recurrence_forward_impl<scalar_t>(a.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                                             h.data_ptr<scalar_t>(), T, P, R, Q);
  });
  return h;
}

// the adjoint: G_t = dh_t + a_{t+1} G_{t+1} -> dL/da_t = sum_r G_t h_{t-1} (T, P, Q), dL/dx_t = G_t (T, P, R, Q),
// dL/dh0 = a_0 G_0 (P, R, Q)
std::vector<torch::Tensor> linear_recurrence_backward(torch::Tensor dh, torch::Tensor a, torch::Tensor h,
                                                      torch::Tensor h0) {
  const int64_t T = h.size(0), P = h.size(1), R = h.size(2), Q = h.size(3);
  check(dh, h, "dh");
  check(a, h, "a");
  check(h0, h, "h0");
  check(h, h, "h");
  auto da = torch::empty_like(a), dx = torch::empty_like(h), dh0 = torch::empty_like(h0);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "agalite_linear_recurrence_backward", [&] {
    linear_recurrence_backward_impl<scalar_t>(dh.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                              h0.data_ptr<scalar_t>(), da.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                                              dh0.data_ptr<scalar_t>(), T, P, R, Q);
  });
  return {da, dx, dh0};
}
