"""GaLiTe's matrix recurrence as a custom operator (galite_kernels.py): its torch loops (block-start checkpoints,
adjoint backward) and its C++ kernel (galite_kernels.cpp, registered for the CPU) equal autograd through
ppo_galite.py's loop over steps, in float64: read-outs, last states and every input's gradient, with episode
starts inside a block, gates at 0, 1e-9, 1 - 1e-9 and 1, T not a multiple of the block and T = 1; opcheck; the
fallback when the kernel cannot be built; and GaLiTeAttention with its loop replaced by galite_kernels.attention."""

import contextlib
import shutil

import pytest
import torch

import fused_kernels
import galite_kernels
import ppo_galite
from galite_kernels import attention, matrix_recurrence

GATES = (0.0, 1e-9, 1 - 1e-9, 1.0)


@pytest.fixture(scope="module")
def cpu_kernels():
    """The C++ kernel, registered for the CPU for the tests that take this fixture (the others run the torch loops
    inside galite_kernels.loops()). Built once per machine (torch's extension cache): ~25-90 s the first time."""
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler on this machine: the fused CPU kernel cannot be built (the torch loops run)")
    if not galite_kernels.enable("cpu"):
        pytest.fail(f"a C++ compiler is here but the fused CPU kernel was not built: {galite_kernels._kernels.failed.get('cpu')}")
    yield galite_kernels
    galite_kernels.disable("cpu")


def reference(beta, gamma, v_in, k_in, query, keep, C, s, eps=1e-10):
    """ppo_galite.GaLiTeAttention.forward's loop over steps, as written there (autograd runs through it), also
    returning the numerators and denominators it divides."""
    B = keep.shape[1]
    nums, dens, attn = [], [], []
    steps = zip(*(a.unbind(0) for a in (keep, beta, gamma, v_in, k_in, query)))
    for keep_t, beta_t, gamma_t, v_in_t, k_in_t, query_t in steps:
        keep_t = keep_t.view(B, 1, 1)
        C, s = C * keep_t.unsqueeze(-1), s * keep_t
        C = (1 - beta_t.unsqueeze(-1) * gamma_t.unsqueeze(-2)) * C + v_in_t.unsqueeze(-1) * k_in_t.unsqueeze(-2)
        s = (1 - gamma_t) * s + k_in_t
        numerator = (C @ query_t.unsqueeze(-1)).squeeze(-1)
        denominator = (s * query_t).sum(-1, keepdim=True) + eps
        nums.append(numerator)
        dens.append((s * query_t).sum(-1))
        attn.append((numerator / denominator).flatten(-2))
    return torch.stack(nums), torch.stack(dens), C, s, torch.stack(attn)


def case(T, seed, B=2, H=2, d=3, eta=2, gates=False, dtype=torch.float64):
    """Inputs as the layer makes them (gates in (0, 1), non-negative keys and queries, gated inputs), an episode
    start at T // 2 for sequence 0 (inside a block) and at random elsewhere, non-zero start states."""
    g = torch.Generator().manual_seed(seed)
    F = eta * d

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    beta, gamma = rand(T, B, H, d), rand(T, B, H, F)
    if gates:  # every gate value at the edges, on both gates
        beta.view(-1)[: 4 * (beta.numel() // 4)] = torch.tensor(GATES, dtype=torch.float64).repeat(beta.numel() // 4)
        gamma.view(-1)[: 4 * (gamma.numel() // 4)] = torch.tensor(GATES[::-1], dtype=torch.float64).repeat(gamma.numel() // 4)
    v_in = beta * torch.randn(T, B, H, d, generator=g, dtype=torch.float64)
    k_in = gamma * rand(T, B, H, F)
    query = rand(T, B, H, F)
    keep = (rand(T, B) > 0.2).double()
    keep[T // 2, 0] = 0.0
    C0, s0 = torch.randn(B, H, d, F, generator=g, dtype=torch.float64), rand(B, H, F)
    return [x.to(dtype) for x in (beta, gamma, v_in, k_in, query, keep, C0, s0)]


DIFFERENTIABLE = (0, 1, 2, 3, 4, 6, 7)  # beta, gamma, v_in, k_in, query, C0, s0 (not keep)


def outputs_and_grads(fn, inputs, seed=0):
    """fn(*inputs) -> (num, den, C, s, ...): those four and the gradients of a random linear loss of them with
    respect to every differentiable input."""
    inputs = [x.clone().requires_grad_(i in DIFFERENTIABLE) for i, x in enumerate(inputs)]
    num, den, C, s = fn(*inputs)[:4]
    g = torch.Generator().manual_seed(seed)
    loss = sum((y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum() for y in (num, den, C, s))
    grads = torch.autograd.grad(loss, [inputs[i] for i in DIFFERENTIABLE])
    return [num.detach(), den.detach(), C.detach(), s.detach(), *grads]


def assert_all_close(got, want, atol):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, (k, g.shape, w.shape, g.dtype, w.dtype)
        torch.testing.assert_close(g, w, rtol=0, atol=atol, msg=lambda m: f"output {k}: {m}")


CASES = [  # (T, block, gates): blocks that split the chunk evenly, unevenly, not at all; T = 1
    (1, 8, False), (1, 1, True), (7, 3, True), (9, 4, False), (12, 32, True), (17, 8, True), (24, 8, False),
]


def op(block):
    return lambda *inputs: matrix_recurrence(*inputs, block)


def check_equals_reference(T, block, gates, atol=1e-12):
    inputs = case(T, seed=T + block, gates=gates)
    want = outputs_and_grads(reference, inputs)
    got = outputs_and_grads(op(block), inputs)
    assert_all_close(got, want, atol)
    eps = 1e-10
    a, (C, s) = attention(*inputs[:6], (inputs[6], inputs[7]), eps, block)
    torch.testing.assert_close(a, reference(*inputs, eps=eps)[4], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T, block, gates", CASES)
def test_torch_loop_op_equals_autograd_through_the_loop(T, block, gates):
    with galite_kernels.loops("cpu"):
        check_equals_reference(T, block, gates)


@pytest.mark.parametrize("T, block, gates", CASES)
def test_cpu_kernel_equals_autograd_through_the_loop(cpu_kernels, T, block, gates):
    check_equals_reference(T, block, gates)


def test_cpu_kernel_equals_the_torch_loop_op_at_model_sizes_in_float32(cpu_kernels):
    """The paper's d and eta (vectorised rows of F = 128), float32, start states and gradients through all outputs:
    to float32 rounding, against the torch loops on the same inputs."""
    inputs = case(20, seed=5, B=2, H=2, d=64, eta=2, gates=True, dtype=torch.float32)
    got = outputs_and_grads(op(8), inputs)
    with galite_kernels.loops("cpu"):
        want = outputs_and_grads(op(8), inputs)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-3, msg=lambda m: f"output {k}: {m}")


def test_mixed_dtypes_promote_and_gradients_keep_their_inputs_dtypes(cpu_kernels):
    inputs = case(5, seed=1)
    inputs[5] = inputs[5].float()  # keep in float32, as a mask may come
    for context in (galite_kernels.loops, contextlib.nullcontext):  # the torch loops, then the kernel
        with context():
            got = outputs_and_grads(op(2), inputs)
            assert all(x.dtype == torch.float64 for x in got)


def opcheck_inputs(layout):
    """contiguous inputs, or dense ones with their dims permuted and views with gaps (layouts a compiled graph or a
    projection's split may give)"""
    inputs = case(5, seed=0, d=2, eta=2)
    if layout == "strided":
        inputs[1] = inputs[1].permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)  # gamma: features outermost
        inputs[4] = torch.cat([inputs[4], inputs[4]], dim=-1)[..., ::2]  # query: every other element of a larger one
        inputs[6] = inputs[6].transpose(-1, -2).contiguous().transpose(-1, -2)  # C0
    return (*[x.requires_grad_(i in DIFFERENTIABLE) for i, x in enumerate(inputs)], 2)


def opcheck_both(layout):
    """opcheck on the op and on its backward op (called directly: the op's opcheck runs the backward only through
    autograd, where a compiled graph's strides are not compared)."""
    inputs = opcheck_inputs(layout)
    torch.library.opcheck(matrix_recurrence, inputs)
    inputs = [x.detach() if isinstance(x, torch.Tensor) else x for x in inputs]
    out = matrix_recurrence(*inputs)
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(y.shape, generator=g, dtype=y.dtype) for y in out[:4]]
    torch.library.opcheck(galite_kernels.matrix_recurrence_backward, (*grads, *inputs[:6], out[4], out[5], inputs[-1]))


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_torch_loop_op_passes_opcheck(layout):
    """The fake implementations (shapes, dtypes and strides), the schema and the autograd registration agree with
    the op (torch.library.opcheck)."""
    with galite_kernels.loops("cpu"):
        opcheck_both(layout)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_cpu_kernel_passes_opcheck(cpu_kernels, layout):
    opcheck_both(layout)


def test_loops_switches_the_kernel_off_and_back(cpu_kernels, monkeypatch):
    calls = []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    real = galite_kernels._kernels.extension
    monkeypatch.setattr(galite_kernels._kernels, "extension", Spy())
    inputs = case(4, seed=0)
    outputs_and_grads(op(2), inputs)  # forward and backward
    assert calls == ["matrix_recurrence_forward", "matrix_recurrence_backward"] and galite_kernels.enabled("cpu")
    with galite_kernels.loops("cpu"):
        assert not galite_kernels.enabled("cpu")
        outputs_and_grads(op(2), inputs)
    assert len(calls) == 2 and galite_kernels.enabled("cpu")


def test_failed_build_falls_back_to_the_loops_and_says_so_once(monkeypatch, capsys):
    """No compiler (or a failed build): enable() returns False, one line on stderr says so (once), nothing is
    registered, and the operator still runs (the torch loops). The module's state is swapped for a fresh one for
    the test (monkeypatch puts the real one back)."""
    import torch.utils.cpp_extension

    fresh = galite_kernels._kernels
    for name, value in [("extension", None), ("registered", set()), ("failed", {}), ("off", {})]:
        monkeypatch.setattr(fresh, name, value)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'x':\nc++: error: command not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load_inline", no_compiler)
    assert galite_kernels.enable("cpu") is False
    assert galite_kernels.enable("cpu") is False and not galite_kernels.enabled("cpu")
    # (a first build also says beforehand that it is building: not part of what is checked here)
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "building the fused" not in line]
    assert len(lines) == 1 and "command not found" in lines[0] and "torch loops" in lines[0], lines
    assert fresh.registered == set()
    with contextlib.ExitStack() as stack:  # (a registration made by the other tests, switched off here)
        for name in galite_kernels.OPS:
            stack.enter_context(fused_kernels.opdef(name).set_kernel_enabled("cpu", False))
        num, den, C, s, _, _ = matrix_recurrence(*case(5, seed=3), 2)
    assert torch.isfinite(num).all() and C.shape == (2, 2, 3, 6)


# ------------------------------------------------------------------------------------ GaLiTeAttention end to end
def features(self, x):
    """ppo_galite.GaLiTeAttention.forward up to its recurrence, copied unchanged: the gates, gated inputs and query."""
    T, B, _ = x.shape
    H, d, eta = self.n_heads, self.d_head, self.eta
    k, v, beta, gamma, x_q, p1, p3 = self.proj(x).view(T, B, H, -1).split(self.parts, dim=-1)
    q, p2 = (torch.einsum("tbhi,hoi->tbho", x_q, self.query_weight) + self.query_bias).split([d, eta], dim=-1)

    def outer(a, b):
        return (a.unsqueeze(-1) * b.unsqueeze(-2)).flatten(-2)

    key = outer(torch.relu(p1), torch.relu(k))
    query = outer(torch.relu(p2), torch.relu(q))
    gamma = outer(torch.sigmoid(p3), torch.sigmoid(gamma))
    beta = torch.sigmoid(beta)
    return beta, gamma, beta * v, gamma * key, query


def forward_with_loop(self, x, state, keep):
    """GaLiTeAttention.forward as ppo_galite.py has it without the hook: autograd through the loop over steps."""
    *_, C, s, attn = reference(*features(self, x), keep, *state, eps=self.eps)
    return self.out(attn), (C, s)


def forward_with_attention(self, x, state, keep):
    """GaLiTeAttention.forward with its loop over steps replaced by galite_kernels.attention (the hook the report
    proposes for T > 1)."""
    attn, state = attention(*features(self, x), keep, state, self.eps)
    return self.out(attn), state


def layer_outputs_and_grads(layer, forward, T=11, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, d, F = layer.n_heads, layer.d_head, layer.eta * layer.d_head
    x = torch.randn(T, B, layer.proj.in_features, generator=g, dtype=torch.float64, requires_grad=True)
    keep = torch.ones(T, B, dtype=torch.float64)
    keep[4, 1] = keep[0, 2] = 0.0
    C0 = torch.randn(B, H, d, F, generator=g, dtype=torch.float64, requires_grad=True)
    s0 = torch.rand(B, H, F, generator=g, dtype=torch.float64, requires_grad=True)
    out, (C, s) = forward(layer, x, (C0, s0), keep)
    loss = sum((y * torch.randn(y.shape, generator=g, dtype=torch.float64)).sum() for y in (out, C, s))
    grads = torch.autograd.grad(loss, [x, C0, s0, *layer.parameters()])
    return [out.detach(), C.detach(), s.detach(), *grads]


@pytest.mark.parametrize("kernel", ["torch loops", "C++"])
def test_galite_attention_is_the_same_with_its_loop_replaced(request, kernel):
    """forward_with_loop is ppo_galite.py's layer (checked against the layer itself, whichever way its forward
    runs), and the layer with the operator in place of its loop gives the same outputs and gradients."""
    torch.manual_seed(0)
    layer = ppo_galite.GaLiTeAttention(8, 2, 4, 2).double()
    context = galite_kernels.loops("cpu")
    if kernel == "C++":
        request.getfixturevalue("cpu_kernels")
        context = contextlib.nullcontext()
    with context:
        want = layer_outputs_and_grads(layer, forward_with_loop)
        assert_all_close(layer_outputs_and_grads(layer, ppo_galite.GaLiTeAttention.forward), want, atol=1e-10)
        assert_all_close(layer_outputs_and_grads(layer, forward_with_attention), want, atol=1e-10)


def test_compiled_layer_calls_the_operator_opaquely():
    """Under torch.compile(fullgraph=True) the operator and its backward stay single calls in the forward and
    backward graphs (no loop over time unrolled), and the compiled layer equals the eager one."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    layer = ppo_galite.GaLiTeAttention(8, 2, 4, 2).double()
    T, B = 40, 2
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, 8, generator=g, dtype=torch.float64)
    state = (torch.randn(B, 2, 4, 8, generator=g, dtype=torch.float64), torch.rand(B, 2, 8, generator=g, dtype=torch.float64))
    keep = torch.ones(T, B, dtype=torch.float64)
    keep[4, 0] = 0.0

    def loss_fn(x):
        out, (C, s) = forward_with_attention(layer, x, state, keep)
        return out.pow(2).sum() + C.sum() + s.sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    with galite_kernels.loops("cpu"):
        loss = compiled(xs[0])
        (grad,) = torch.autograd.grad(loss, xs[0])
        want = loss_fn(xs[1])
        (grad_want,) = torch.autograd.grad(want, xs[1])
    torch.testing.assert_close(loss, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, grad_want, rtol=0, atol=1e-10)
    targets = [str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"]
    for op_name in ("galite.matrix_recurrence.default", "galite.matrix_recurrence_backward.default"):
        assert targets.count(op_name) == 1, (op_name, [t for t in targets if "galite" in t])
    assert len(targets) < 300  # (185 measured) a loop over T = 40 steps unrolled would add 10+ nodes per step
