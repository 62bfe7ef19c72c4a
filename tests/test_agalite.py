"""AGaLiTe specifics: the fixed-size state, the bounded oscillator tick, and the recurrences' numerics and gradients."""

import math
from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_agalite
from ppo_agalite import Agent, Args, key_readout, linear_recurrence, outer

OBS_SPACE = gym.spaces.Box(0.0, 1.0, (5,), np.float32)
ACTION_SPACE = gym.spaces.Discrete(4)


def small_args(**kwargs):
    sizes = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_ffc=16, eta=3, r=4)
    return Args(**{**sizes, **kwargs})


def sequential(a, b, h0):
    h, out = h0, []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 33, 128])
def test_linear_recurrence_equals_the_recurrence(T):
    g = torch.Generator().manual_seed(T)
    a = torch.rand(T, 3, 1, 5, generator=g, dtype=torch.float64)
    b = torch.randn(T, 3, 2, 5, generator=g, dtype=torch.float64)
    h0 = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(linear_recurrence(a, b, h0), sequential(a, b, h0), rtol=0, atol=1e-12)


def test_recurrence_is_safe_when_gates_are_near_0_or_1():
    """Decays of exactly 0 (episode starts, gates saturated at 1) and near 1 over a long chunk: nothing becomes
    nan/inf and float32 stays at rounding error (no division by vanishing cumulative products)."""
    T = 256
    g = torch.Generator().manual_seed(0)
    a = torch.rand(T, 4, 6, generator=g)
    a[::7] = 0.0  # hard resets
    a[:, 0] = 1e-30  # gates saturated: a cumulative product would underflow within two steps
    a[:, 1] = 1.0 - 1e-7  # almost no forgetting
    b = torch.randn(T, 4, 6, generator=g)
    h0 = torch.randn(4, 6, generator=g)
    out = linear_recurrence(a, b, h0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), sequential(a.double(), b.double(), h0.double()), rtol=1e-5, atol=1e-5)


def test_linear_recurrence_gradients():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(6, 2, 1, 3, generator=g, dtype=torch.float64).requires_grad_()  # broadcast over dim 2
    x = torch.randn(6, 2, 4, 3, generator=g, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(linear_recurrence, (a, x, h0))
    torch.library.opcheck(linear_recurrence, (a, x, h0))  # the operator's registration (fake tensors, autograd)


def key_readout_reference(qu, qw, gu, gw, ku, kw, keep, c, h0):
    """key_readout written out with autograd: the eta*d vectors, every state, then the read-outs."""
    query, gate, k_in = outer(qu, qw), outer(gu, gw), outer(ku, kw)
    h, ys = h0, []
    for t in range(c.shape[0]):
        h = ((1 - gate[t]) * keep[t]).unsqueeze(-2) * h + c[t].unsqueeze(-1) * k_in[t].unsqueeze(-2)
        ys.append((h * query[t].unsqueeze(-2)).sum(-1))
    return torch.stack(ys), h


def key_readout_inputs(T, seed, eta=3, d=4, J=3, N=(2, 2)):
    g = torch.Generator().manual_seed(seed)
    factors = [torch.rand((T, *N, size), generator=g, dtype=torch.float64) for size in (eta, d) * 3]
    keep = (torch.rand((T, *N, 1), generator=g) > 0.2).double()  # episode starts inside the chunk
    c = torch.randn((T, *N, J), generator=g, dtype=torch.float64)
    h0 = torch.randn((*N, J, eta * d), generator=g, dtype=torch.float64)
    return [f.requires_grad_() for f in factors], keep, c, h0.requires_grad_()


@pytest.mark.parametrize("T, block", [(1, 32), (7, 3), (9, 3), (12, 32), (17, 8)])
def test_key_readout_equals_autograd_through_the_recurrence(T, block):
    """Outputs and every gradient, with blocks that split the chunk (evenly, unevenly, not at all), episode
    starts inside, a carried-in state, and gradients reaching it through both outputs."""
    factors, keep, c, h0 = key_readout_inputs(T, seed=T)
    y, last, _ = key_readout(*factors, keep, c, h0, block)
    y_ref, last_ref = key_readout_reference(*factors, keep, c, h0)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(last, last_ref, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(100 + T)
    wy, wl = torch.randn(y.shape, generator=g, dtype=torch.float64), torch.randn(last.shape, generator=g, dtype=torch.float64)
    inputs = [*factors, h0]
    grads = torch.autograd.grad((y * wy).sum() + (last * wl).sum(), inputs)
    grads_ref = torch.autograd.grad((y_ref * wy).sum() + (last_ref * wl).sum(), inputs)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)


def test_key_readout_gradcheck():
    factors, keep, c, h0 = key_readout_inputs(5, seed=0, eta=2, d=3, J=2, N=(2,))
    assert torch.autograd.gradcheck(lambda *x: key_readout(*x[:6], keep, c, x[6], 2)[:2], (*factors, h0))
    torch.library.opcheck(key_readout, (*factors, keep, c, h0, 2))


def test_state_size_is_fixed_and_matches_the_formula():
    args = small_args()
    agent = Agent(OBS_SPACE, ACTION_SPACE, args).double()
    H, d, eta, r = args.n_heads, args.d_head, args.eta, args.r
    per_layer = H * (r * d + r * eta * d + eta * d)  # shared/AGALITE.md section 1
    B = 3
    state = agent.initial_state(B, "cpu")
    floats = sum(t.numel() for t in state if t.is_floating_point())
    assert floats == args.n_layers * B * per_layer
    sizes = [tuple(t.shape) for t in state]
    for T in (1, 10, 200):
        x = torch.rand(T, B, 5, dtype=torch.float64)
        with torch.no_grad():
            _, state = agent.memory(x, state, torch.zeros(T, B, dtype=torch.float64))
        assert [tuple(t.shape) for t in state] == sizes  # whatever the number of steps seen


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_tick_stays_bounded_and_cosines_equal_the_unbounded_formula(r):
    agent = Agent(OBS_SPACE, ACTION_SPACE, small_args(r=r))
    period = 2 * max(r - 1, 1)
    # cos(omega_j * step) computed exactly (the angle reduced with rational arithmetic, omega_j / 2pi =
    # -1/2 + j/(r-1)) equals the cosine of the bounded tick that the model uses, even for huge step counts
    for step in [1, 2, 7, 10**6 + 3, 10**9 + 11, 2**40 + 5]:
        turns = [Fraction(-1, 2) + (Fraction(j, r - 1) if r > 1 else 0) for j in range(r)]  # omega_j / (2 pi)
        exact = np.array([math.cos(2 * math.pi * float((turn * step) % 1)) for turn in turns])
        bounded = torch.cos(torch.tensor(step % period) * agent.omega)  # float32, as in the model
        np.testing.assert_allclose(bounded.numpy(), exact, atol=1e-6)
    # whereas the unbounded float32 formula drifts far from it after a billion steps
    unbounded = torch.cos(torch.tensor(float(10**9 + 11)) * agent.omega)
    turns = [Fraction(-1, 2) + (Fraction(j, r - 1) if r > 1 else 0) for j in range(r)]
    exact = np.array([math.cos(2 * math.pi * float((turn * (10**9 + 11)) % 1)) for turn in turns])
    assert np.abs(unbounded.numpy() - exact).max() > 1e-2
    # and the tick carried in the state never leaves [0, period), across chunks and single steps; it starts at 1
    # as in the release (the first step sees tick 2)
    state = agent.initial_state(2, "cpu")
    assert torch.all(state[3] == 1 % period)
    total = 1
    for T in [1, 5, 1, 13, 64]:
        with torch.no_grad():
            _, state = agent.memory(torch.rand(T, 2, 5), state, torch.zeros(T, 2))
        total += T
        assert state[3].dtype == torch.long
        assert torch.all(state[3] == total % period)


def test_tick_of_a_billion_steps_gives_the_same_output_as_its_residue():
    """A state whose tick came from 10^9 + 3 steps behaves like one with tick (10^9 + 3) mod period."""
    agent = Agent(OBS_SPACE, ACTION_SPACE, small_args(r=4)).double()
    period = agent.period
    x = torch.rand(6, 2, 5, dtype=torch.float64)
    done = torch.zeros(6, 2, dtype=torch.float64)
    state = agent.initial_state(2, "cpu")
    big = state[:3] + (torch.full_like(state[3], 10**9 + 3),)
    small = state[:3] + (torch.full_like(state[3], (10**9 + 3) % period),)
    with torch.no_grad():
        torch.testing.assert_close(agent.memory(x, big, done)[0], agent.memory(x, small, done)[0])


def test_inconsistent_sizes_are_refused():
    with pytest.raises(ValueError, match="must be positive"):
        Agent(OBS_SPACE, ACTION_SPACE, small_args(eta=0))
    with pytest.raises(ValueError, match="must be positive"):
        Agent(OBS_SPACE, ACTION_SPACE, small_args(n_heads=-1))


def test_default_sizes_are_the_release_t_maze_sizes():
    args = ppo_agalite.Args()
    assert (args.n_layers, args.d_model, args.n_heads, args.d_head, args.d_ffc, args.eta, args.r) == (4, 128, 4, 64, 128, 4, 2)
    assert args.gru_bias == 2.0
