"""The fused kernels of AGaLiTe's recurrence operators equal ppo_agalite.py's torch loops: the C++ ones
(agalite_kernels.py, registered for the CPU) and the Triton ones (agalite_triton.py, run here on CPU tensors by
Triton's interpreter). Outputs, last states, block starts and every gradient, in float64; the fallback when
the kernels cannot be built; the model end to end; and torch.compile still seeing one opaque operator."""

import os
import shutil
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":  # run as a script (the Triton checks below): what conftest.py does under pytest
    sys.path.insert(0, ROOT)

import agalite_kernels  # noqa: E402
import ppo_agalite  # noqa: E402
from ppo_agalite import Agent, key_readout, key_readout_backward, linear_recurrence, linear_recurrence_backward  # noqa: E402
from test_agalite import ACTION_SPACE, OBS_SPACE, key_readout_inputs, small_args  # noqa: E402

GATES = (0.0, 1e-9, 1 - 1e-9, 1.0)


@pytest.fixture(scope="module")
def cpu_kernels():
    """The C++ kernels, registered for the CPU for this module's tests and switched off after them (the other
    test files test the torch loops). Built once per machine (torch's extension cache): 30-90 s the first time."""
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler on this machine: the fused CPU kernels cannot be built (the torch loops run)")
    if not agalite_kernels.enable("cpu"):
        pytest.fail(f"a C++ compiler is here but the fused CPU kernels were not built: {agalite_kernels._kernels.failed.get('cpu')}")
    yield agalite_kernels
    agalite_kernels.disable("cpu")


def key_case(T, seed, eta=3, d=4, J=3, N=(2, 2), gates=False, dtype=torch.float64):
    factors, keep, c, h0 = key_readout_inputs(T, seed, eta=eta, d=d, J=J, N=N)
    factors = [f.detach().to(dtype) for f in factors]
    if gates:  # gamma_t = gamma_u (x) gamma_w at 0, 1e-9, 1 - 1e-9 and 1 (a_t = 1 - gamma_t where no episode starts)
        factors[2] = torch.ones_like(factors[2])
        factors[3] = torch.tensor(GATES, dtype=dtype)[torch.arange(d) % 4].expand_as(factors[3]).clone()
    keep = keep.to(dtype)
    keep[T // 2] = 0.0  # an episode start inside a block (and others at random)
    return factors, keep, c.to(dtype), h0.detach().to(dtype)


def assert_all_close(got, want, atol):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, k
        torch.testing.assert_close(g, w, rtol=0, atol=atol, msg=lambda m: f"output {k}: {m}")


def key_outputs_and_grads(forward, backward, factors, keep, c, h0, block, seed=0):
    """(y, last, starts) and the backward's seven gradients for random dL/dy and dL/dh_{T-1}."""
    y, last, starts = forward(*factors, keep, c, h0, block)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, dtype=y.dtype)
    dh_last = torch.randn(last.shape, generator=g, dtype=y.dtype)
    return [y, last, starts, *backward(dy, dh_last, *factors, keep, c, starts, block)]


def loop_outputs(factors, keep, c, h0, block):
    with agalite_kernels.loops("cpu"):
        return key_outputs_and_grads(key_readout, key_readout_backward, factors, keep, c, h0, block)


KEY_CASES = [  # (T, block, gates): blocks that split the chunk evenly, unevenly, not at all; T = 1
    (1, 8, False), (7, 3, False), (9, 3, True), (12, 32, False), (17, 8, True), (33, 8, False),
]


# --------------------------------------------------------------------------------------------------- C++ (CPU)
@pytest.mark.parametrize("T, block, gates", KEY_CASES)
def test_cpu_key_readout_equals_the_loop(cpu_kernels, T, block, gates):
    case = key_case(T, seed=T, gates=gates)
    got = key_outputs_and_grads(key_readout, key_readout_backward, *case, block)  # dispatches to the C++ kernels
    assert_all_close(got, loop_outputs(*case, block), atol=1e-12)


def test_cpu_key_readout_model_layout_and_float32(cpu_kernels):
    """The layout AGaLiTeAttention passes (factors split out of one projection, keep broadcast over heads), the
    paper's eta and d, and float32 (to rounding)."""
    T, B, H, eta, d, J = 10, 2, 3, 4, 16, 3
    g = torch.Generator().manual_seed(0)
    proj = torch.rand(T, B, H, 3 * (eta + d), generator=g)
    factors = list(proj.split([eta, d] * 3, dim=-1))  # non-contiguous views
    keep = (torch.rand(T, B, 1, 1, generator=g) > 0.3).float()
    c = torch.randn(T, B, H, J, generator=g)
    h0 = torch.randn(B, H, J, eta * d, generator=g)
    got = key_outputs_and_grads(key_readout, key_readout_backward, factors, keep, c, h0, 4)
    want = loop_outputs(factors, keep, c, h0, 4)
    assert_all_close(got, want, atol=1e-4)
    got64 = key_outputs_and_grads(key_readout, key_readout_backward, [f.double() for f in factors], keep.double(), c.double(), h0.double(), 4)
    want64 = loop_outputs([f.double() for f in factors], keep.double(), c.double(), h0.double(), 4)
    assert_all_close(got64, want64, atol=1e-12)


def recurrence_case(a_shape, x_shape, seed, gates=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(a_shape, generator=g, dtype=torch.float64)
    if gates:
        a.view(-1)[: 4 * (a.numel() // 4)] = torch.tensor(GATES, dtype=torch.float64).repeat(a.numel() // 4)
        a[a.shape[0] // 2] = 0.0  # an episode start
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    h0 = torch.randn(x_shape[1:], generator=g, dtype=torch.float64)
    dh = torch.randn(x_shape, generator=g, dtype=torch.float64)
    return a, x, h0, dh


RECURRENCE_CASES = [  # the value side's gate shared by the r rows, no broadcast, broadcast over non-adjacent dims
    ((6, 3, 1, 5), (6, 3, 2, 5), True), ((1, 4), (1, 4), False), ((9, 2, 3), (9, 2, 3), True),
    ((7, 1, 2, 1), (7, 3, 2, 4), False), ((5, 2, 1, 1, 4), (5, 2, 3, 2, 4), False),
]


def recurrence_outputs(forward, backward, a, x, h0, dh):
    h = forward(a, x, h0)
    return [h, *backward(dh, a, h, h0)]


@pytest.mark.parametrize("a_shape, x_shape, gates", RECURRENCE_CASES)
def test_cpu_linear_recurrence_equals_the_loop(cpu_kernels, a_shape, x_shape, gates):
    a, x, h0, dh = recurrence_case(a_shape, x_shape, seed=len(x_shape), gates=gates)
    got = recurrence_outputs(linear_recurrence, linear_recurrence_backward, a, x, h0, dh)
    with agalite_kernels.loops("cpu"):
        want = recurrence_outputs(linear_recurrence, linear_recurrence_backward, a, x, h0, dh)
    assert_all_close(got, want, atol=1e-12)


def test_cpu_kernels_pass_opcheck(cpu_kernels):
    """The registered kernels agree with the operators' fake implementations and autograd (torch.library.opcheck)."""
    factors, keep, c, h0 = key_case(5, seed=0, eta=2, d=3, J=2, N=(2,))
    torch.library.opcheck(key_readout, (*[f.requires_grad_() for f in factors], keep, c, h0.requires_grad_(), 2))
    a, x, h0, _ = recurrence_case((6, 2, 1, 3), (6, 2, 4, 3), seed=1)
    torch.library.opcheck(linear_recurrence, (a.requires_grad_(), x.requires_grad_(), h0.requires_grad_()))


def test_loops_switches_the_kernels_off_and_back(cpu_kernels, monkeypatch):
    calls = []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    real = agalite_kernels._kernels.extension
    monkeypatch.setattr(agalite_kernels._kernels, "extension", Spy())
    factors, keep, c, h0 = key_case(4, seed=0)
    key_readout(*factors, keep, c, h0, 2)
    assert calls == ["key_readout_forward"] and agalite_kernels.enabled("cpu")
    with agalite_kernels.loops("cpu"):
        assert not agalite_kernels.enabled("cpu")
        key_readout(*factors, keep, c, h0, 2)
        linear_recurrence(*recurrence_case((3, 2), (3, 2), seed=0)[:3])
    assert calls == ["key_readout_forward"] and agalite_kernels.enabled("cpu")
    linear_recurrence(*recurrence_case((3, 2), (3, 2), seed=0)[:3])
    assert calls == ["key_readout_forward", "linear_recurrence_forward"]


def test_failed_build_falls_back_to_the_loops_and_says_so_once(monkeypatch, capsys):
    """No compiler (or a failed build): enable() returns False, one line on stderr says so (once), nothing is
    registered, and the operators still run (the torch loops). A fresh copy of the module, so that the real
    registration is not touched."""
    import importlib.util

    import torch.utils.cpp_extension

    spec = importlib.util.spec_from_file_location("agalite_kernels_fallback", agalite_kernels.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'x':\nc++: error: command not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load_inline", no_compiler)
    assert fresh.enable("cpu") is False
    assert fresh.enable("cpu") is False and not fresh.enabled("cpu")
    # (a first build also says beforehand that it is building: not part of what is checked here)
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "building the fused" not in line]
    assert len(lines) == 1 and "command not found" in lines[0] and "torch loops" in lines[0], lines
    assert fresh._kernels.registered == set()
    with agalite_kernels.loops("cpu"):  # what then runs: the loop operators
        factors, keep, c, h0 = key_case(5, seed=3)
        y, last, _ = key_readout(*factors, keep, c, h0, 2)
    assert torch.isfinite(y).all() and y.shape == c.shape and last.shape == h0.shape


def test_a_build_killed_midway_does_not_block_the_next_load(cpu_kernels, tmp_path):
    """torch's build guard is a `lock` file that a killed build leaves behind, and load_inline then waits for it
    forever, even for a build already in the cache. fused_kernels.load removes it under its own flock (which dies with
    its holder): a process that finds such a file still loads the kernels, and the file is gone."""
    import glob
    import subprocess

    (so_file,) = glob.glob(os.path.join(os.path.dirname(cpu_kernels._kernels.extension.__file__), "*.so"))
    lock = os.path.join(os.path.dirname(so_file), "lock")
    open(lock, "w").close()  # what a build killed midway leaves
    try:
        result = subprocess.run([sys.executable, "-c", "import agalite_kernels; print(agalite_kernels.enable('cpu'))"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        stale = os.path.exists(lock)
        if stale:
            os.remove(lock)
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
    assert not stale


def agent_outputs_and_grads(agent, T=13, B=3, seed=0):
    """AGaLiTe's Agent over a training chunk (episode starts inside, a carried-in state): outputs, new state and
    the gradients of every parameter and of the start state."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, B, OBS_SPACE.shape[0], generator=g, dtype=torch.float64)
    done = torch.zeros(T, B, dtype=torch.float64)
    done[5, 1] = done[9, 0] = 1.0
    state = tuple(s.double() if s.is_floating_point() else s for s in agent.initial_state(B, "cpu"))
    with torch.no_grad():
        _, state = agent.memory(torch.rand(4, B, OBS_SPACE.shape[0], generator=g, dtype=torch.float64), state, done[:4])
    state = tuple(s.clone().requires_grad_() if s.is_floating_point() else s for s in state)
    hidden, new_state = agent.memory(x, state, done)
    loss = (hidden * torch.randn(hidden.shape, generator=g, dtype=torch.float64)).sum() + sum(
        (s * torch.randn(s.shape, generator=g, dtype=torch.float64)).sum() for s in new_state[:3])
    inputs = [p for name, p in agent.named_parameters() if not name.startswith(("actor", "critic"))]  # (the heads: unused)
    grads = torch.autograd.grad(loss, inputs + [s for s in state if s.requires_grad])
    return [hidden, *new_state[:3], *grads]


def test_agent_is_the_same_with_and_without_the_fused_kernels(cpu_kernels):
    torch.manual_seed(0)
    agent = Agent(OBS_SPACE, ACTION_SPACE, small_args(eta=3, r=2)).double()
    got = agent_outputs_and_grads(agent)
    with agalite_kernels.loops("cpu"):
        want = agent_outputs_and_grads(agent)
    assert_all_close(got, want, atol=1e-10)


def test_compiled_model_calls_the_operators_opaquely(cpu_kernels):
    """Under torch.compile(fullgraph=True) the operators stay single calls in the forward and backward graphs
    (no loop over time unrolled), and the compiled AGaLiTe layer equals the eager loops."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    attention = ppo_agalite.AGaLiTeAttention(8, 2, 4, 3, 2).double()
    T, B = 11, 2
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, 8, generator=g, dtype=torch.float64)
    state = (torch.randn(B, 2, 2, 12, dtype=torch.float64), torch.randn(B, 2, 2, 4, dtype=torch.float64),
             torch.randn(B, 2, 12, dtype=torch.float64))
    keep = torch.ones(T, B, dtype=torch.float64)
    keep[4, 0] = 0.0
    cos = torch.cos(torch.arange(T, dtype=torch.float64)[:, None, None] * torch.tensor([-3.14, 3.14], dtype=torch.float64)).expand(T, B, 2)

    def loss_fn(x):
        out, new_state = attention(x, state, keep, cos)
        return out.pow(2).sum() + sum(s.sum() for s in new_state)

    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    loss = compiled(xs[0])
    (grad,) = torch.autograd.grad(loss, xs[0])
    with agalite_kernels.loops("cpu"):
        want = loss_fn(xs[1])
        (grad_want,) = torch.autograd.grad(want, xs[1])
    torch.testing.assert_close(loss, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, grad_want, rtol=0, atol=1e-10)
    targets = [str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"]
    for op in ("agalite.key_readout.default", "agalite.key_readout_backward.default", "agalite.linear_recurrence.default",
               "agalite.linear_recurrence_backward.default"):
        assert targets.count(op) == 1, (op, [t for t in targets if "agalite" in t])
    assert len(targets) < 200  # a loop over T unrolled into the graph would add hundreds of nodes


# ------------------------------------------------------------------------------------- Triton (its interpreter)
# Triton decides when a function is decorated with @triton.jit whether it runs interpreted, its own library
# (tl.sum, tl.zeros, ...) included, and torch may import triton before any test runs: so the checks below run in
# one subprocess started with TRITON_INTERPRET=1 (this file run as a script), each reported as its own test here.
def check_triton_key_readout(tr, T, block, gates, eta, d):
    N = (2,) if d > 8 else (2, 2)
    case = key_case(T, seed=T, eta=eta, d=d, J=3, N=N, gates=gates)
    if d > 8:
        assert tr._tiles(eta, d, 6)[0] < eta  # the feature blocks split the eta rows
    got = key_outputs_and_grads(tr.key_readout_triton, tr.key_readout_backward_triton, *case, block)
    assert_all_close(got, loop_outputs(*case, block), atol=1e-12)


def check_triton_linear_recurrence(tr, a_shape, x_shape, gates):
    a, x, h0, dh = recurrence_case(a_shape, x_shape, seed=len(x_shape), gates=gates)
    got = recurrence_outputs(tr.linear_recurrence_triton, tr.linear_recurrence_backward_triton, a, x, h0, dh)
    want = recurrence_outputs(linear_recurrence, linear_recurrence_backward, a, x, h0, dh)
    assert_all_close(got, want, atol=1e-12)


def check_triton_float32(tr):
    case = key_case(6, seed=2, eta=2, d=8, J=2, N=(3,), gates=True, dtype=torch.float32)
    got = key_outputs_and_grads(tr.key_readout_triton, tr.key_readout_backward_triton, *case, 4)
    assert_all_close(got, loop_outputs(*case, 4), atol=1e-5)


def check_triton_registers_every_operator(tr):
    assert set(tr.KERNELS) == set(agalite_kernels.OPS)


def check_triton_self_check(tr):
    """enable("cuda") first runs each kernel against the torch loops (agalite_kernels.self_check): the kernels pass
    it, and a wrong result or a kernel that raises (as a failed GPU compilation would) is caught with its reason."""
    assert agalite_kernels.self_check(tr.KERNELS, "cpu") is None
    wrong = dict(tr.KERNELS, **{"agalite::linear_recurrence": lambda a, x, h0: torch.zeros_like(x)})
    assert agalite_kernels.self_check(wrong, "cpu") == "linear_recurrence: output 0 differs from the torch loop's"

    def fails(*args):
        raise RuntimeError("PTX compilation failed\n(details)")

    failing = dict(tr.KERNELS, **{"agalite::key_readout_backward": fails})
    assert agalite_kernels.self_check(failing, "cpu") == "RuntimeError: PTX compilation failed"


TRITON_CHECKS = {  # small sizes: the interpreter runs every program step by step in numpy
    **{f"key_readout T={T} block={b} gates={g} eta={e} d={d}": (check_triton_key_readout, (T, b, g, e, d))
       for T, b, g, e, d in [(1, 8, False, 3, 4), (7, 3, True, 3, 4), (9, 4, False, 2, 5), (5, 2, True, 3, 64)]},
    **{f"linear_recurrence a={a} x={x} gates={g}": (check_triton_linear_recurrence, (a, x, g)) for a, x, g in RECURRENCE_CASES[:4]},
    "key_readout float32": (check_triton_float32, ()),
    "KERNELS": (check_triton_registers_every_operator, ()),
    "self_check": (check_triton_self_check, ()),
}


@pytest.fixture(scope="module")
def triton_results():
    import importlib.util
    import json
    import subprocess

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (`pip install triton`): the GPU kernels cannot be tested in its interpreter")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--triton-interpreter"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(f"the Triton interpreter subprocess failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads(lines[-1])
    if "import" in results:
        pytest.skip(f"triton cannot be imported ({results['import']}): the GPU kernels cannot be tested in its interpreter")
    return results


@pytest.mark.parametrize("check", list(TRITON_CHECKS))
def test_triton_kernel_equals_the_loop_in_the_interpreter(triton_results, check):
    assert triton_results.get(check) == "ok", triton_results.get(check, "not run")


if __name__ == "__main__" and "--triton-interpreter" in sys.argv:
    import json
    import traceback

    assert os.environ.get("TRITON_INTERPRET") == "1"
    try:
        import agalite_triton
    except ImportError as e:
        print(json.dumps({"import": str(e)}))
        sys.exit(0)
    results = {}
    for name, (check, args) in TRITON_CHECKS.items():
        try:
            check(agalite_triton, *args)
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
    print(json.dumps(results))
