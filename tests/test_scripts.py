"""Behaviour every ppo_*.py script must share: the memory model's chunked (training) forward equals
step-by-step acting, episode starts forget the past, gradients reach every parameter, a short training
run writes the shared TensorBoard keys, and bad input stops with a clear message."""

import glob
import importlib
import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import ROOT

# Small model sizes per script, so that the tests run in seconds on a 2-core CPU.
SMALL = {
    "ppo_lstm": {"d_model": 16, "lstm_hidden": 24},
    "ppo_agalite": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_ffc": 16, "eta": 3, "r": 3},
    "ppo_gtrxl": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_ffc": 16, "memory_len": 6},
    "ppo_galite": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_ffc": 16, "eta": 3},
}
SCRIPTS = sorted(SMALL)

OBS_SPACE = gym.spaces.Box(0.0, 1.0, (7,), np.float32)
ACTION_SPACE = gym.spaces.MultiDiscrete([3, 2])


def make_agent(script, dtype=torch.float64, seed=0):
    module = importlib.import_module(script)
    torch.manual_seed(seed)
    args = module.Args(**SMALL[script])
    return module, module.Agent(OBS_SPACE, ACTION_SPACE, args).to(dtype)


def run_steps(agent, x, state, done, action):
    """Step-by-step acting: T calls with T = 1."""
    outputs = []
    for t in range(x.shape[0]):
        out = agent.get_action_and_value(x[t : t + 1], state, done[t : t + 1], action[t : t + 1])
        outputs.append(out[1:4])
        state = out[4]
    return [torch.cat(parts) for parts in zip(*outputs)], state


def warm_state(agent, B, seed, T=9):
    """A non-trivial memory state: the state after T random steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, B, 7, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return agent.memory(x, agent.initial_state(B, "cpu"), torch.zeros(T, B, dtype=torch.float64))[1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_chunked_forward_equals_step_by_step(script):
    _, agent = make_agent(script)
    T, B = 21, 4
    g = torch.Generator().manual_seed(1)
    x = torch.rand(T, B, 7, generator=g, dtype=torch.float64)
    done = (torch.rand(T, B, generator=g) < 0.15).double()
    done[0, 0], done[5, 1], done[20, 2] = 1.0, 1.0, 1.0  # episode starts at the start, inside and at the end
    action = torch.stack([torch.randint(0, 3, (T, B), generator=g), torch.randint(0, 2, (T, B), generator=g)], -1)
    state = warm_state(agent, B, seed=2)
    with torch.no_grad():
        _, logprob, entropy, value, chunk_state = agent.get_action_and_value(x, state, done, action)
        (step_logprob, step_entropy, step_value), step_state = run_steps(agent, x, state, done, action)
    torch.testing.assert_close(logprob, step_logprob, rtol=0, atol=1e-10)
    torch.testing.assert_close(entropy, step_entropy, rtol=0, atol=1e-10)
    torch.testing.assert_close(value, step_value, rtol=0, atol=1e-10)
    for a, b in zip(chunk_state, step_state):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("script", SCRIPTS)
def test_chunked_forward_equals_step_by_step_float32(script):
    """The same in float32; documented tolerance 1e-5 (measured: about 1e-6)."""
    _, agent = make_agent(script, dtype=torch.float32)
    T, B = 64, 3
    g = torch.Generator().manual_seed(3)
    x = torch.rand(T, B, 7, generator=g)
    done = (torch.rand(T, B, generator=g) < 0.05).float()
    action = torch.stack([torch.randint(0, 3, (T, B), generator=g), torch.randint(0, 2, (T, B), generator=g)], -1)
    state = agent.initial_state(B, "cpu")
    with torch.no_grad():
        _, logprob, _, value, _ = agent.get_action_and_value(x, state, done, action)
        (step_logprob, _, step_value), _ = run_steps(agent, x, state, done, action)
    torch.testing.assert_close(logprob, step_logprob, rtol=0, atol=1e-5)
    torch.testing.assert_close(value, step_value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("script", SCRIPTS)
def test_episode_start_forgets_the_past(script):
    """After an episode start, outputs do not depend on the memory carried in or the inputs before it."""
    _, agent = make_agent(script)
    T, B, start = 12, 2, 5
    g = torch.Generator().manual_seed(4)
    x1 = torch.rand(T, B, 7, generator=g, dtype=torch.float64)
    x2 = x1.clone()
    x2[:start] = torch.rand(start, B, 7, generator=g, dtype=torch.float64)  # a different past
    done = torch.zeros(T, B, dtype=torch.float64)
    done[start] = 1.0
    with torch.no_grad():
        h1, _ = agent.memory(x1, warm_state(agent, B, seed=5), done)
        h2, _ = agent.memory(x2, warm_state(agent, B, seed=6), done)
    assert not torch.allclose(h1[:start], h2[:start])  # the past did matter before the reset
    torch.testing.assert_close(h1[start:], h2[start:], rtol=0, atol=1e-12)
    # and acting from a reset equals acting from the initial (zero) state
    with torch.no_grad():
        h3, _ = agent.memory(x1[start:], agent.initial_state(B, "cpu"), torch.zeros(T - start, B, dtype=torch.float64))
    if script != "ppo_agalite":  # AGaLiTe's oscillator tick keeps counting across episodes (as the release does)
        torch.testing.assert_close(h1[start:], h3, rtol=0, atol=1e-12)


@pytest.mark.parametrize("script", SCRIPTS)
def test_gradient_reaches_every_parameter(script):
    _, agent = make_agent(script, dtype=torch.float32)
    T, B = 10, 3
    x = torch.rand(T, B, 7)
    done = torch.zeros(T, B)
    done[4, 1] = 1.0
    action = torch.zeros(T, B, 2, dtype=torch.long)
    _, logprob, entropy, value, _ = agent.get_action_and_value(x, agent.initial_state(B, "cpu"), done, action)
    (logprob.sum() + entropy.sum() + value.sum()).backward()
    for name, param in agent.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_state_tensors_have_the_batch_in_dim_1(script):
    """The PPO loop selects sequences from stored states with s[:, idx]."""
    _, agent = make_agent(script)
    for batch in (1, 5):
        for tensor in agent.initial_state(batch, "cpu"):
            assert tensor.shape[1] == batch


@pytest.mark.parametrize("script", SCRIPTS)
def test_unsupported_spaces_are_refused_clearly(script):
    module = importlib.import_module(script)
    args = module.Args(**SMALL[script])
    with pytest.raises(ValueError, match="unsupported observation space"):
        module.Agent(gym.spaces.Box(0, 1, (4, 4), np.float32), ACTION_SPACE, args)
    with pytest.raises(ValueError, match="unsupported action space"):
        module.Agent(OBS_SPACE, gym.spaces.Box(-1, 1, (2,), np.float32), args)


@pytest.mark.parametrize("script", SCRIPTS)
def test_relu_heads_have_their_hidden_gain(script):
    """--head-activation relu --head-hidden-gain 2 (the release's Craftax heads: Dense(128) -> relu -> Dense, output
    gains 0.01 and 1): relu between the layers, and every singular value of each orthogonal weight is its gain."""
    module = importlib.import_module(script)
    torch.manual_seed(0)
    args = module.check_args(module.Args(**SMALL[script], head_hidden=128, head_activation="relu", head_hidden_gain=2.0,
                                         actor_gain=0.01, critic_gain=1.0, num_envs=2, num_minibatches=2))
    agent = module.Agent(OBS_SPACE, ACTION_SPACE, args).double()
    x = torch.randn(3, agent.actor[0].in_features, dtype=torch.float64)
    for head, n_out, gain in ((agent.actor, 5, 0.01), (agent.critic, 1, 1.0)):
        hidden, activation, out = head
        assert type(activation) is torch.nn.ReLU and hidden.out_features == 128 and out.out_features == n_out
        for layer, std in ((hidden, 2.0), (out, gain)):
            singular = torch.linalg.svdvals(layer.weight)
            torch.testing.assert_close(singular, torch.full_like(singular, std), atol=1e-6 * std, rtol=0)
            assert not layer.bias.any()
        torch.testing.assert_close(head(x), out(torch.relu(hidden(x))), rtol=0, atol=0)
    # the default stays the release's T-Maze head: tanh, hidden gain sqrt(2)
    hidden, activation, _ = module.Agent(OBS_SPACE, ACTION_SPACE, module.Args(**SMALL[script], head_hidden=8)).actor
    assert type(activation) is torch.nn.Tanh
    singular = torch.linalg.svdvals(hidden.weight.double())
    torch.testing.assert_close(singular, torch.full_like(singular, 2**0.5), atol=1e-6, rtol=0)


def cli(script, **kwargs):
    args = [sys.executable, os.path.join(ROOT, f"{script}.py")]
    for key, value in {**SMALL[script], **kwargs}.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


SHARED_KEYS = [
    "charts/episodic_return", "charts/episodic_length", "charts/success_rate", "charts/SPS", "charts/learning_rate",
    "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
    "losses/explained_variance",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_two_update_training_run_writes_the_shared_logs(script, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cmd = cli(
        script, total_timesteps=128, num_envs=4, num_steps=16, seq_len=8, num_minibatches=4, update_epochs=2,
        env_kwargs=json.dumps({"corridor_length": 2}), save_model=True, eval_episodes=3, cuda=False,
    )
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "eval over 3 episodes" in result.stdout
    (run_dir,) = glob.glob(str(tmp_path / "runs" / f"TMaze-v0__{script}__1__*"))
    events = EventAccumulator(run_dir)
    events.Reload()
    tags = events.Tags()["scalars"]
    for key in SHARED_KEYS:
        assert key in tags, f"{key} missing from {tags}"
    assert [e.step for e in events.Scalars("charts/SPS")] == [64, 128]  # two updates of 4 envs x 16 steps
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]
    assert glob.glob(os.path.join(run_dir, f"{script}.cleanrl_model"))


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"env_id": "NoSuchEnv-v0"}, "unknown env id 'NoSuchEnv-v0'"),
        ({"env_kwargs": json.dumps({"corridor_length": 999})}, "8-bit position code"),
        ({"num_minibatches": 3}, "must divide the number of training sequences"),
        ({"env_id": "Pendulum-v1"}, "unsupported action space"),
        ({"threads": -1}, "--threads (-1) must be 0"),
    ],
)
def test_bad_input_gives_a_clear_error(script, kwargs, message, tmp_path):
    result = subprocess.run(cli(script, **{"num_envs": 2, "num_minibatches": 2, **kwargs}), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_compiled_update_and_acting_step_equal_eager(script):
    """--compile compiles the scripts' own `ppo_loss` and `act`: the compiled minibatch loss, its parts and every
    parameter's gradient equal eager ones, and the compiled acting step gives the log-prob, value and state
    that eager evaluation gives for the action it took (float32; tolerance 1e-5, measured about 1e-7)."""
    torch._dynamo.reset()
    module, agent = make_agent(script, dtype=torch.float32)
    args = module.Args(**SMALL[script])
    T, B = 8, 3
    g = torch.Generator().manual_seed(7)
    x = torch.rand(T, B, 7, generator=g)
    done = (torch.rand(T, B, generator=g) < 0.2).float()
    action = torch.stack([torch.randint(0, 3, (T, B), generator=g), torch.randint(0, 2, (T, B), generator=g)], -1)
    with torch.no_grad():
        state = agent.memory(torch.rand(5, B, 7, generator=g), agent.initial_state(B, "cpu"), torch.zeros(5, B))[1]
    logprobs, advantages, returns, values = (torch.randn(T, B, generator=g) for _ in range(4))

    def loss_and_grads(fn):
        agent.zero_grad()
        loss, stats = fn(agent, args, x, state, done, action, logprobs - 1.5, advantages, returns, values)
        loss.backward()
        return [loss.detach(), stats] + [p.grad.clone() for p in agent.parameters()]

    eager = loss_and_grads(module.ppo_loss)
    compiled = loss_and_grads(torch.compile(module.ppo_loss, fullgraph=True))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)

    with torch.no_grad():
        act, logprob, value, new_state = torch.compile(module.act, fullgraph=True)(agent, x[0], state, done[0])
        _, logprob_eager, _, value_eager, state_eager = agent.get_action_and_value(x[:1], state, done[:1], act[None])
    torch.testing.assert_close(logprob, logprob_eager[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(value, value_eager[0], rtol=0, atol=1e-5)
    for a, b in zip(new_state, state_eager):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_lstm_equals_torch_lstm_in_values_and_gradients(compiled):
    """ppo_lstm.py's hand-unrolled LSTM, whose recurrent weight gets its gradient in one product after the loop
    (RecurrentWeightGrad), gives the outputs, final state and gradients (every parameter and the initial state)
    of torch.nn.LSTM with the same weights, stepped once per step with the state zeroed where an episode starts."""
    torch._dynamo.reset()
    _, agent = make_agent("ppo_lstm")
    T, B, H = 12, 3, SMALL["ppo_lstm"]["lstm_hidden"]
    g = torch.Generator().manual_seed(3)
    x = torch.rand(T, B, 7, generator=g, dtype=torch.float64)
    done = (torch.rand(T, B, generator=g) < 0.2).double()
    state = tuple(s.clone().requires_grad_() for s in warm_state(agent, B, seed=4))
    weights = torch.randn(T, B, H, generator=g, dtype=torch.float64)  # a loss that weighs every output differently

    reference = torch.nn.LSTM(SMALL["ppo_lstm"]["d_model"], H).double()
    with torch.no_grad():
        reference.weight_ih_l0.copy_(agent.lstm_x.weight)
        reference.bias_ih_l0.copy_(agent.lstm_x.bias)
        reference.weight_hh_l0.copy_(agent.lstm_h.weight)
        reference.bias_hh_l0.zero_()  # nn.LSTM's second bias; ours has one
    hidden = agent.embed(agent.encoder(x.flatten(0, 1))).view(T, B, -1)
    h, c = state
    outputs = []
    for t in range(T):
        keep = (1.0 - done[t]).view(1, B, 1)
        out, (h, c) = reference(hidden[t : t + 1], (keep * h, keep * c))
        outputs.append(out)
    (torch.cat(outputs) * weights).sum().backward()
    grads = (reference.weight_ih_l0, reference.bias_ih_l0, reference.weight_hh_l0, *agent.embed.parameters(), *state)
    expected = [torch.cat(outputs), h, c] + [p.grad.clone() for p in grads]
    agent.zero_grad()
    for s in state:
        s.grad = None

    memory = torch.compile(agent.memory, fullgraph=True) if compiled else agent.memory
    out, (h, c) = memory(x, state, done)
    (out * weights).sum().backward()
    grads = (agent.lstm_x.weight, agent.lstm_x.bias, agent.lstm_h.weight, *agent.embed.parameters(), *state)
    got = [out, h, c] + [p.grad for p in grads]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
