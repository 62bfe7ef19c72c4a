// Fused CPU kernels for GaLiTe's matrix recurrence (galite::matrix_recurrence and its backward), built and
// registered for the CPU by galite_kernels.py.
//
// They compute what the readable torch loops in galite_kernels.py compute (matrix_recurrence,
// matrix_recurrence_backward and their docstrings are the specification; written from those equations), but
// per sequence and head, step by step, in one pass over the d x F matrix state (F = eta*d) per step instead of
// ~10 tensor operations over all of them: the forward's pass decays the state, adds v'_t k'_t^T and reads it out
// with the query while each row is in registers or L1; the backward's adjoint pass forms G_t = dL/dC_t row by
// row and takes every gradient's term from it in the same pass. Rows are F contiguous values: the inner loops
// run over them with `omp simd` (vectorised; the reductions in lanes, then summed: a reassociation of the sums,
// within rounding).
//
// Layouts (the Python wrappers flatten B and H into N and make everything contiguous, in one dtype):
//   beta, v_in, num (T, N, d); gamma, k_in, query (T, N, F); keep, den (T, N); C (N, d, F); s (N, F);
//   block starts (ceil(T / block), N, d, F) and (ceil(T / block), N, F).
// Sequences and heads (n) are independent: they are split over torch's intra-op threads (at::parallel_for).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

// One step from the states (Cp, sp) before it into (Cn, sn) (the same arrays, or others: element by element, so
// in place is safe), with the read-outs num = C_t query_t and *den = <s_t, query_t> when num is not null:
//   C_t[i][f] = (1 - beta[i] gamma[f]) * (keep C_{t-1}[i][f]) + v[i] k[f],   s_t[f] = (1 - gamma[f]) * (keep s_{t-1}[f]) + k[f]
template <typename scalar_t>
inline void matrix_step(const scalar_t* __restrict__ beta, const scalar_t* __restrict__ gamma,
                        const scalar_t* __restrict__ v, const scalar_t* __restrict__ k,
                        const scalar_t* __restrict__ q, scalar_t keep, const scalar_t* Cp, const scalar_t* sp,
                        scalar_t* Cn, scalar_t* sn, scalar_t* __restrict__ num, scalar_t* __restrict__ den,
                        int64_t d, int64_t F) {
  scalar_t z = 0;
#pragma omp simd reduction(+ : z)
  for (int64_t f = 0; f < F; ++f) {
    const scalar_t x = (1 - gamma[f]) * (keep * sp[f]) + k[f];
    sn[f] = x;
    z += x * q[f];
  }
  if (den) *den = z;
  for (int64_t i = 0; i < d; ++i) {
    const scalar_t bi = beta[i], vi = v[i];
    const scalar_t* cp = Cp + i * F;
    scalar_t* cn = Cn + i * F;
    if (num) {
      scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t f = 0; f < F; ++f) {
        const scalar_t x = (1 - bi * gamma[f]) * (keep * cp[f]) + vi * k[f];
        cn[f] = x;
        acc += x * q[f];
      }
      num[i] = acc;
    } else {
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) cn[f] = (1 - bi * gamma[f]) * (keep * cp[f]) + vi * k[f];
    }
  }
}

template <typename scalar_t>
void forward_impl(const scalar_t* beta, const scalar_t* gamma, const scalar_t* v, const scalar_t* k,
                  const scalar_t* q, const scalar_t* keep, const scalar_t* C0, const scalar_t* s0, scalar_t* num,
                  scalar_t* den, scalar_t* C_last, scalar_t* s_last, scalar_t* C_starts, scalar_t* s_starts,
                  int64_t T, int64_t N, int64_t d, int64_t F, int64_t block) {
  const int64_t M = d * F;
  at::parallel_for(0, N, 1, [&](int64_t n_begin, int64_t n_end) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      scalar_t *C = C_last + n * M, *s = s_last + n * F;  // the state, updated in place
      std::copy(C0 + n * M, C0 + (n + 1) * M, C);
      std::copy(s0 + n * F, s0 + (n + 1) * F, s);
      for (int64_t t = 0; t < T; ++t) {
        if (t % block == 0) {
          std::copy(C, C + M, C_starts + ((t / block) * N + n) * M);
          std::copy(s, s + F, s_starts + ((t / block) * N + n) * F);
        }
        const int64_t tn = t * N + n;
        matrix_step(beta + tn * d, gamma + tn * F, v + tn * d, k + tn * F, q + tn * F, keep[tn], C, s, C, s,
                    num + tn * d, den + tn, d, F);
      }
    }
  });
}

// The adjoint at step t, for one sequence and head. On entry GC = A_{t+1} * G_{t+1} and gs = a_{t+1} * g_{t+1}
// (dL/dC_t, dL/ds_t through the steps after t), on return A_t * G_t and a_t * g_t (for step t - 1), with
//   G_t = dn_t query_t^T + GC,  g_t = dz_t query_t + gs,  A_t = keep (1 - beta gamma^T),  a_t = keep (1 - gamma).
// The gradients of step t (galite_kernels.matrix_recurrence_backward's equations):
//   dquery = C_t^T dn + dz s_t,  dv[i] = <G[i], k>,  dk = G^T v + g,
//   dbeta[i] = -<P[i], gamma>,  dgamma = -P^T beta - g * (keep s_{t-1}),  P = G * (keep C_{t-1}).
// One pass over the rows of G: per element, the loads of C_t, C_{t-1} and GC, and the F-sized accumulators
// (dquery, dk, dgamma) in L1.
template <typename scalar_t>
inline void adjoint_step(const scalar_t* __restrict__ dn, scalar_t dz, const scalar_t* __restrict__ beta,
                         const scalar_t* __restrict__ gamma, const scalar_t* __restrict__ v,
                         const scalar_t* __restrict__ k, const scalar_t* __restrict__ q, scalar_t keep,
                         const scalar_t* __restrict__ Ct, const scalar_t* __restrict__ Cp,
                         const scalar_t* __restrict__ st, const scalar_t* __restrict__ sp, scalar_t* __restrict__ GC,
                         scalar_t* __restrict__ gs, scalar_t* __restrict__ dbeta, scalar_t* __restrict__ dgamma,
                         scalar_t* __restrict__ dv, scalar_t* __restrict__ dk, scalar_t* __restrict__ dq, int64_t d,
                         int64_t F) {
#pragma omp simd
  for (int64_t f = 0; f < F; ++f) {
    const scalar_t g = dz * q[f] + gs[f];  // g_t
    dq[f] = dz * st[f];
    dk[f] = g;
    dgamma[f] = -g * (keep * sp[f]);
    gs[f] = keep * (1 - gamma[f]) * g;  // a_t g_t
  }
  for (int64_t i = 0; i < d; ++i) {
    const scalar_t dni = dn[i], bi = beta[i], vi = v[i];
    const scalar_t *__restrict__ ct = Ct + i * F, *__restrict__ cp = Cp + i * F;
    scalar_t* __restrict__ G = GC + i * F;
    scalar_t acc_v = 0, acc_b = 0;
#pragma omp simd reduction(+ : acc_v, acc_b)
    for (int64_t f = 0; f < F; ++f) {
      const scalar_t Gf = dni * q[f] + G[f];  // G_t[i][f]
      const scalar_t P = Gf * (keep * cp[f]);
      dq[f] += dni * ct[f];
      dk[f] += Gf * vi;
      dgamma[f] -= P * bi;
      acc_v += Gf * k[f];
      acc_b += P * gamma[f];
      G[f] = (1 - bi * gamma[f]) * keep * Gf;  // A_t G_t
    }
    dv[i] = acc_v;
    dbeta[i] = -acc_b;
  }
}

template <typename scalar_t>
void backward_impl(const scalar_t* dnum, const scalar_t* dden, const scalar_t* dC_last, const scalar_t* ds_last,
                   const scalar_t* beta, const scalar_t* gamma, const scalar_t* v, const scalar_t* k,
                   const scalar_t* q, const scalar_t* keep, const scalar_t* C_starts, const scalar_t* s_starts,
                   scalar_t* dbeta, scalar_t* dgamma, scalar_t* dv, scalar_t* dk, scalar_t* dq, scalar_t* dC0,
                   scalar_t* ds0, int64_t T, int64_t N, int64_t d, int64_t F, int64_t block) {
  const int64_t M = d * F, n_blocks = (T + block - 1) / block;
  at::parallel_for(0, N, 1, [&](int64_t n_begin, int64_t n_end) {
    std::vector<scalar_t> Cs(std::min(block, T) * M), ss(std::min(block, T) * F);  // one block's states
    for (int64_t n = n_begin; n < n_end; ++n) {
      // the carries A_{t+1} G_{t+1}, a_{t+1} g_{t+1} live in the outputs dC0, ds0, which they equal at the end;
      // before the last step they are dL/dC_{T-1}, dL/ds_{T-1} from the state carried out of the chunk
      scalar_t *GC = dC0 + n * M, *gs = ds0 + n * F;
      std::copy(dC_last + n * M, dC_last + (n + 1) * M, GC);
      std::copy(ds_last + n * F, ds_last + (n + 1) * F, gs);
      for (int64_t b = n_blocks - 1; b >= 0; --b) {
        const int64_t s = b * block, e = std::min(s + block, T);
        const scalar_t *C_start = C_starts + (b * N + n) * M, *s_start = s_starts + (b * N + n) * F;
        for (int64_t t = s; t < e; ++t) {  // rebuild the block's states from its start
          const int64_t tn = t * N + n, j = t - s;
          matrix_step(beta + tn * d, gamma + tn * F, v + tn * d, k + tn * F, q + tn * F, keep[tn],
                      j ? Cs.data() + (j - 1) * M : C_start, j ? ss.data() + (j - 1) * F : s_start,
                      Cs.data() + j * M, ss.data() + j * F, (scalar_t*)nullptr, (scalar_t*)nullptr, d, F);
        }
        for (int64_t t = e - 1; t >= s; --t) {  // the adjoint, backwards in time
          const int64_t tn = t * N + n, j = t - s;
          adjoint_step(dnum + tn * d, dden[tn], beta + tn * d, gamma + tn * F, v + tn * d, k + tn * F, q + tn * F,
                       keep[tn], Cs.data() + j * M, j ? Cs.data() + (j - 1) * M : C_start, ss.data() + j * F,
                       j ? ss.data() + (j - 1) * F : s_start, GC, gs, dbeta + tn * d, dgamma + tn * F, dv + tn * d,
                       dk + tn * F, dq + tn * F, d, F);
        }
      }
    }
  });
}

void check(const torch::Tensor& x, const torch::Tensor& like) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "galite_kernels: every input must be a contiguous CPU tensor");
  TORCH_CHECK(x.scalar_type() == like.scalar_type(), "galite_kernels: an input has dtype ", x.scalar_type(),
              ", expected ", like.scalar_type());
}

}  // namespace

// beta, v_in (T, N, d), gamma, k_in, query (T, N, F), keep (T, N), C0 (N, d, F), s0 (N, F)
// -> num (T, N, d), den (T, N), C_{T-1}, s_{T-1}, block starts of C and s
std::vector<torch::Tensor> matrix_recurrence_forward(torch::Tensor beta, torch::Tensor gamma, torch::Tensor v_in,
                                                     torch::Tensor k_in, torch::Tensor query, torch::Tensor keep,
                                                     torch::Tensor C0, torch::Tensor s0, int64_t block) {
  const int64_t T = beta.size(0), N = beta.size(1), d = beta.size(2), F = gamma.size(2);
  TORCH_CHECK(block >= 1 && T >= 1 && C0.size(0) == N && C0.size(1) == d && C0.size(2) == F && s0.size(1) == F &&
                  gamma.size(0) == T && keep.size(0) == T && keep.size(1) == N,
              "galite_kernels: bad sizes");
  for (auto* x : {&beta, &gamma, &v_in, &k_in, &query, &keep, &C0, &s0}) check(*x, C0);
  const int64_t n_blocks = (T + block - 1) / block;
  auto num = torch::empty({T, N, d}, C0.options()), den = torch::empty({T, N}, C0.options());
  auto C = torch::empty_like(C0), s = torch::empty_like(s0);
  auto C_starts = torch::empty({n_blocks, N, d, F}, C0.options()), s_starts = torch::empty({n_blocks, N, F}, C0.options());
  AT_DISPATCH_FLOATING_TYPES(C0.scalar_type(), "galite_matrix_recurrence_forward", [&] {
    forward_impl<scalar_t>(beta.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>(), v_in.data_ptr<scalar_t>(),
                           k_in.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(), keep.data_ptr<scalar_t>(),
                           C0.data_ptr<scalar_t>(), s0.data_ptr<scalar_t>(), num.data_ptr<scalar_t>(),
                           den.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                           C_starts.data_ptr<scalar_t>(), s_starts.data_ptr<scalar_t>(), T, N, d, F, block);
  });
  return {num, den, C, s, C_starts, s_starts};
}

// -> gradients of beta, gamma, v_in, k_in, query (their layouts), C0 and s0
std::vector<torch::Tensor> matrix_recurrence_backward(torch::Tensor dnum, torch::Tensor dden, torch::Tensor dC_last,
                                                      torch::Tensor ds_last, torch::Tensor beta, torch::Tensor gamma,
                                                      torch::Tensor v_in, torch::Tensor k_in, torch::Tensor query,
                                                      torch::Tensor keep, torch::Tensor C_starts,
                                                      torch::Tensor s_starts, int64_t block) {
  const int64_t T = beta.size(0), N = beta.size(1), d = beta.size(2), F = gamma.size(2);
  TORCH_CHECK(block >= 1 && T >= 1 && C_starts.size(0) == (T + block - 1) / block && C_starts.size(1) == N &&
                  C_starts.size(2) == d && C_starts.size(3) == F && dC_last.size(0) == N,
              "galite_kernels: bad sizes");
  for (auto* x : {&dnum, &dden, &dC_last, &ds_last, &beta, &gamma, &v_in, &k_in, &query, &keep, &C_starts, &s_starts})
    check(*x, C_starts);
  auto dbeta = torch::empty_like(beta), dgamma = torch::empty_like(gamma), dv = torch::empty_like(v_in);
  auto dk = torch::empty_like(k_in), dq = torch::empty_like(query);
  auto dC0 = torch::empty_like(dC_last), ds0 = torch::empty_like(ds_last);
  AT_DISPATCH_FLOATING_TYPES(C_starts.scalar_type(), "galite_matrix_recurrence_backward", [&] {
    backward_impl<scalar_t>(dnum.data_ptr<scalar_t>(), dden.data_ptr<scalar_t>(), dC_last.data_ptr<scalar_t>(),
                            ds_last.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>(),
                            v_in.data_ptr<scalar_t>(), k_in.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(),
                            keep.data_ptr<scalar_t>(), C_starts.data_ptr<scalar_t>(), s_starts.data_ptr<scalar_t>(),
                            dbeta.data_ptr<scalar_t>(), dgamma.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(),
                            dk.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(), dC0.data_ptr<scalar_t>(),
                            ds0.data_ptr<scalar_t>(), T, N, d, F, block);
  });
  return {dbeta, dgamma, dv, dk, dq, dC0, ds0};
}
