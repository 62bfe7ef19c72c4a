"""GTrXL specifics: the cache carried between chunks, the episode and window masks, and the state's size."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo_gtrxl import Agent, Args

OBS_SPACE = gym.spaces.Box(0.0, 1.0, (5,), np.float32)
ACTION_SPACE = gym.spaces.Discrete(4)
M = 5  # memory_len: small, so that chunks of a few steps slide the cache past its end


def make_agent(**kwargs):
    torch.manual_seed(0)
    sizes = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_ffc=16, memory_len=M)
    return Agent(OBS_SPACE, ACTION_SPACE, Args(**{**sizes, **kwargs})).double()


def inputs(T, B, seed):
    return torch.rand(T, B, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def step_by_step(agent, x, state, done):
    hidden = []
    for t in range(x.shape[0]):
        h, state = agent.memory(x[t : t + 1], state, done[t : t + 1])
        hidden.append(h)
    return torch.cat(hidden), state


@pytest.mark.parametrize("kv_cache", [False, True])
@torch.no_grad()
def test_chunk_equals_steps_with_a_carried_cache_and_episode_starts(kv_cache):
    agent = make_agent(kv_cache=kv_cache)
    B = 3
    # a previous chunk leaves a cache that is partly from an earlier episode (env 1) and full (T > M)
    done0 = torch.zeros(7, B, dtype=torch.float64)
    done0[4, 1] = 1.0
    _, state = agent.memory(inputs(7, B, seed=1), agent.initial_state(B, "cpu"), done0)
    assert state[0].any() and state[1][0, 0].all() and not state[1][0, 1].all()
    T = 13
    x = inputs(T, B, seed=2)
    done = torch.zeros(T, B, dtype=torch.float64)
    done[3, 0] = done[9, 0] = 1.0  # two episode starts inside the chunk
    done[0, 2] = 1.0  # the chunk starts a new episode: the whole carried cache is from an earlier one
    h_chunk, state_chunk = agent.memory(x, state, done)
    h_steps, state_steps = step_by_step(agent, x, state, done)
    torch.testing.assert_close(h_chunk, h_steps, rtol=0, atol=1e-10)
    torch.testing.assert_close(state_chunk[0], state_steps[0], rtol=0, atol=1e-10)
    assert torch.equal(state_chunk[1], state_steps[1])
    if kv_cache:
        torch.testing.assert_close(state_chunk[2], state_steps[2], rtol=0, atol=1e-10)
    # and splitting the chunk anywhere (T < M, T > M) gives the same as one chunk
    for cut in (1, 2, 6, 11, 12):
        h_a, s = agent.memory(x[:cut], state, done[:cut])
        h_b, s = agent.memory(x[cut:], s, done[cut:])
        torch.testing.assert_close(torch.cat([h_a, h_b]), h_chunk, rtol=0, atol=1e-10)
        torch.testing.assert_close(s[0], state_chunk[0], rtol=0, atol=1e-10)


@torch.no_grad()
def test_earlier_episodes_are_masked_and_the_same_episode_is_not():
    agent = make_agent()
    B, T, start = 2, 9, 4
    done = torch.zeros(T, B, dtype=torch.float64)
    done[start] = 1.0
    no_reset = torch.zeros(6, B, dtype=torch.float64)
    past_a = agent.memory(inputs(6, B, seed=3), agent.initial_state(B, "cpu"), no_reset)[1]
    past_b = agent.memory(inputs(6, B, seed=4), agent.initial_state(B, "cpu"), no_reset)[1]
    x1 = inputs(T, B, seed=5)
    x2 = x1.clone()
    x2[:start] = inputs(start, B, seed=6)  # a different earlier episode inside the chunk
    h1, s1 = agent.memory(x1, past_a, done)
    h2, s2 = agent.memory(x2, past_b, done)  # ... and a different cache carried in
    torch.testing.assert_close(h1[start:], h2[start:], rtol=0, atol=1e-12)
    # the same holds acting step by step, and afterwards the earlier steps are marked invalid in the cache
    h3, s3 = step_by_step(agent, x2, past_b, done)
    torch.testing.assert_close(h3[start:], h1[start:], rtol=0, atol=1e-12)
    assert s1[1][0].tolist() == [[False] * (M - (T - start)) + [True] * (T - start)] * B
    # without the reset, the cached steps (of the same episode) do matter
    h4, _ = agent.memory(x1, past_a, torch.zeros(T, B, dtype=torch.float64))
    h5, _ = agent.memory(x1, past_b, torch.zeros(T, B, dtype=torch.float64))
    assert (h4 - h5).abs().amax(-1).min() > 1e-6  # at every step: every one of them sees a cached step


@torch.no_grad()
def test_the_cache_holds_the_last_memory_len_layer_inputs():
    agent = make_agent()
    B, T = 2, 12
    x = inputs(T, B, seed=7)
    done = torch.zeros(T, B, dtype=torch.float64)
    _, (cache, valid) = agent.memory(x, agent.initial_state(B, "cpu"), done)
    # layer 0's cache is exactly the embedded last M observations, oldest first
    torch.testing.assert_close(cache[0], agent.embed(x[-M:]).transpose(0, 1), rtol=0, atol=1e-12)
    assert valid.all()
    # a step older than M leaves layer 0's cache unchanged; it still reaches layer 1's cache, because
    # layer 0's outputs at the last M steps attended to it (the receptive field grows by M per layer)
    x_old = x.clone()
    x_old[T - M - 1] += 1.0
    _, (cache_old, _) = agent.memory(x_old, agent.initial_state(B, "cpu"), done)
    torch.testing.assert_close(cache_old[0], cache[0], rtol=0, atol=1e-12)
    assert not torch.allclose(cache_old[1], cache[1])
    # the last M steps are all in it
    for t in range(T - M, T):
        x_new = x.clone()
        x_new[t] += 1.0
        _, (cache_new, _) = agent.memory(x_new, agent.initial_state(B, "cpu"), done)
        assert not torch.allclose(cache_new[0], cache[0])


@torch.no_grad()
def test_a_fresh_cache_is_empty_and_masked():
    """Empty slots are invalid: the first step attends only to itself, whatever the cache holds."""
    agent = make_agent()
    B = 2
    x = inputs(1, B, seed=8)
    cache, valid = agent.initial_state(B, "cpu")
    assert not valid.any() and not cache.any()
    h1, _ = agent.memory(x, (cache, valid), torch.zeros(1, B, dtype=torch.float64))
    h2, _ = agent.memory(x, (torch.randn_like(cache), valid), torch.zeros(1, B, dtype=torch.float64))
    torch.testing.assert_close(h1, h2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("memory_len", [1, 5, 16])
def test_state_size_grows_with_memory_len_only(memory_len):
    agent = make_agent(memory_len=memory_len)
    B, L, d_model = 3, 2, 16
    state = agent.initial_state(B, "cpu")
    assert [tuple(t.shape) for t in state] == [(L, B, memory_len, d_model), (1, B, memory_len)]
    assert state[0].dtype == torch.float64 and state[1].dtype == torch.bool
    with torch.no_grad():
        for T in (1, memory_len + 3, 40):
            _, state = agent.memory(inputs(T, B, seed=T), state, torch.zeros(T, B, dtype=torch.float64))
            assert [tuple(t.shape) for t in state] == [(L, B, memory_len, d_model), (1, B, memory_len)]
    floats = sum(t.numel() for t in state if t.is_floating_point())
    assert floats == L * B * memory_len * d_model  # per environment: n_layers * memory_len * d_model


@pytest.mark.parametrize("kv_cache", [False, True])
def test_no_gradient_flows_into_the_carried_cache(kv_cache):
    agent = make_agent(kv_cache=kv_cache)
    cache, valid, *kv = agent.initial_state(2, "cpu")
    cache = torch.randn_like(cache, requires_grad=True)
    kv = [torch.randn_like(t, requires_grad=True) for t in kv]
    valid = torch.ones_like(valid)
    h, new_state = agent.memory(inputs(4, 2, seed=9), (cache, valid, *kv), torch.zeros(4, 2, dtype=torch.float64))
    assert not any(t.requires_grad for t in new_state)
    h.sum().backward()
    assert cache.grad is None and all(t.grad is None for t in kv)


@pytest.mark.parametrize("bad", [{"memory_len": 0}, {"n_heads": 0}, {"d_head": -1}, {"n_layers": 0}])
def test_bad_sizes_are_refused_clearly(bad):
    with pytest.raises(ValueError, match="GTrXL sizes must be positive integers"):
        make_agent(**bad)


@torch.no_grad()
def test_kv_cache_gives_the_same_outputs_as_the_input_cache():
    """With the same weights, caching keys and values changes only what is stored, step by step past M steps."""
    agent = make_agent()
    kv_agent = make_agent(kv_cache=True)
    kv_agent.load_state_dict(agent.state_dict())
    B, T = 3, 3 * M + 2
    x = inputs(T, B, seed=10)
    done = torch.zeros(T, B, dtype=torch.float64)
    done[0] = 1.0
    done[4, 0] = done[2 * M + 1, 0] = done[M + 2, 1] = 1.0  # episode starts with full caches on both sides
    action = torch.randint(0, 4, (T, B, 1), generator=torch.Generator().manual_seed(11))
    state, kv_state = agent.initial_state(B, "cpu"), kv_agent.initial_state(B, "cpu")
    for t in range(T):
        x_t, done_t, action_t = x[t : t + 1], done[t : t + 1], action[t : t + 1]
        h, _ = agent.memory(x_t, state, done_t)
        kv_h, _ = kv_agent.memory(x_t, kv_state, done_t)
        torch.testing.assert_close(kv_h, h, rtol=0, atol=1e-10)
        _, logprob, _, value, state = agent.get_action_and_value(x_t, state, done_t, action_t)
        _, kv_logprob, _, kv_value, kv_state = kv_agent.get_action_and_value(x_t, kv_state, done_t, action_t)
        torch.testing.assert_close(kv_logprob, logprob, rtol=0, atol=1e-10)
        torch.testing.assert_close(kv_value, value, rtol=0, atol=1e-10)
        assert torch.equal(kv_state[1], state[1])
    # the same inputs are cached, and the carried keys and values are exactly those recomputed from them
    torch.testing.assert_close(kv_state[0], state[0], rtol=0, atol=1e-10)
    for layer, inputs_cache, kv_cache in zip(agent.layers, state[0], kv_state[2]):
        torch.testing.assert_close(kv_cache, layer.keys_values(inputs_cache), rtol=0, atol=1e-10)


def test_kv_cache_leaves_learning_unchanged():
    """--kv-cache changes only how acting computes: a training forward recomputes the cached keys and values, so the
    gradient is the same as without it, and after an update `refresh_keys_values` makes acting match again."""
    agent = make_agent()
    kv_agent = make_agent(kv_cache=True)
    kv_agent.load_state_dict(agent.state_dict())
    B, T = 3, 2 * M + 1
    x = inputs(3 * T, B, seed=20)
    done = torch.zeros(3 * T, B, dtype=torch.float64)
    done[0] = 1.0
    done[T + 3, 1] = 1.0
    with torch.no_grad():  # act for T steps: both caches are full at the training sequence's start
        _, state = step_by_step(agent, x[:T], agent.initial_state(B, "cpu"), done[:T])
        _, kv_state = step_by_step(kv_agent, x[:T], kv_agent.initial_state(B, "cpu"), done[:T])
    for model, start_state in ((agent, state), (kv_agent, kv_state)):
        h, _ = model.memory(x[T : 2 * T], start_state, done[T : 2 * T])  # a training forward from the stored state
        ((model.critic(h) ** 2).sum() + model.actor(h).sin().sum()).backward()
    key_value = kv_agent.layers[0].attention.key_value.weight
    assert key_value.grad.abs().max() > 0
    for (name, p), kv_p in zip(agent.named_parameters(), kv_agent.parameters()):
        torch.testing.assert_close(kv_p.grad, p.grad, rtol=0, atol=1e-10, msg=name)
    with torch.no_grad():  # an update to the weights, then acting goes on from the carried states
        for model in (agent, kv_agent):
            for p in model.parameters():
                p -= 0.1 * p.grad
        h, _ = step_by_step(agent, x[T:], state, done[T:])
        stale, _ = step_by_step(kv_agent, x[T:], kv_state, done[T:])
        fresh, _ = step_by_step(kv_agent, x[T:], kv_agent.refresh_keys_values(kv_state), done[T:])
    assert (stale - h).abs().max() > 1e-6  # keys and values of the old weights would act differently
    torch.testing.assert_close(fresh, h, rtol=0, atol=1e-10)


@pytest.mark.parametrize("memory_len", [1, 5])
def test_kv_cache_state_holds_keys_and_values(memory_len):
    agent = make_agent(memory_len=memory_len, kv_cache=True)
    B, L, H, d, D = 3, 2, 2, 8, 16
    shapes = [(L, B, memory_len, D), (1, B, memory_len), (L, B, memory_len, 2 * H * d)]
    state = agent.initial_state(B, "cpu")
    assert [tuple(t.shape) for t in state] == shapes
    assert state[2].dtype == torch.float64 and state[1].dtype == torch.bool
    with torch.no_grad():
        for T in (1, memory_len + 3):
            _, state = agent.memory(inputs(T, B, seed=T), state, torch.zeros(T, B, dtype=torch.float64))
            assert [tuple(t.shape) for t in state] == shapes
    # layer 0's keys and values are those of the embedded last observations
    x = inputs(memory_len, B, seed=12)
    with torch.no_grad():
        _, (_, _, kv) = agent.memory(x, agent.initial_state(B, "cpu"), torch.zeros(memory_len, B, dtype=torch.float64))
        torch.testing.assert_close(kv[0], agent.layers[0].keys_values(agent.embed(x)).transpose(0, 1), rtol=0, atol=1e-12)
    floats = sum(t.numel() for t in state if t.is_floating_point())
    assert floats == B * L * memory_len * (D + 2 * H * d)  # per environment: n_layers * memory_len * (d_model + 2 H d)


# The release's GTrXL (issue: baselines as the paper ran them): queries from the raw block input, one (u, v)
# pair for all layers, flax's default init inside the transformer.


def test_queries_come_from_the_block_input_not_its_layer_norm():
    agent = make_agent()
    seen = []
    hooks = [layer.attention.query.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for layer in agent.layers]
    block_inputs = []
    hooks += [layer.register_forward_pre_hook(lambda m, args: block_inputs.append(args[0])) for layer in agent.layers]
    x, done = inputs(4, 3, seed=1), torch.zeros(4, 3, dtype=torch.float64)
    with torch.no_grad():
        agent.memory(x, agent.initial_state(3, "cpu"), done)
        for layer in agent.layers:  # a layer norm with other parameters changes keys and values, not queries
            layer.ln1.weight.mul_(3.0).add_(0.5)
            layer.ln1.bias.add_(1.0)
        agent.memory(x, agent.initial_state(3, "cpu"), done)
    for hook in hooks:
        hook.remove()
    assert len(seen) == 2 * len(agent.layers)
    for query_input, block_input in zip(seen, block_inputs):
        assert query_input is block_input
    torch.testing.assert_close(seen[0], seen[len(agent.layers)])  # layer 0's queries ignore its layer norm


def test_one_content_and_position_bias_pair_is_shared_by_all_layers():
    agent = make_agent(n_layers=3)
    names = [name for name, _ in agent.named_parameters() if name.split(".")[-1] in ("u", "v")]
    assert names == ["u", "v"]
    assert agent.u.shape == agent.v.shape == (2, 8)  # (H, d)
    used = []
    hooks = [layer.attention.register_forward_pre_hook(lambda m, args: used.append(args[3:5])) for layer in agent.layers]
    with torch.no_grad():
        agent.memory(inputs(2, 1, seed=0), agent.initial_state(1, "cpu"), torch.zeros(2, 1, dtype=torch.float64))
    for hook in hooks:
        hook.remove()
    assert len(used) == 3 and all(u is agent.u and v is agent.v for u, v in used)


def test_transformer_weights_start_from_lecun_normal_and_heads_stay_orthogonal():
    torch.manual_seed(0)
    agent = Agent(OBS_SPACE, ACTION_SPACE, Args())  # the default sizes: enough weights per layer for the statistics
    linears = [m for m in [*agent.embed.modules(), *agent.layers.modules()] if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 + 4 * 12  # embed; per block query, key_value, position, out, 2 ffc layers, 2 gates x (w, u, u_g)
    for layer in linears:
        std = layer.weight.std().item() * layer.in_features ** 0.5
        assert 0.93 < std < 1.07, (layer, std)  # variance 1 / fan_in
        bound = 2 / 0.87962566103423978 / layer.in_features ** 0.5
        assert layer.weight.abs().max().item() <= bound + 1e-6  # truncated at two standard deviations
        if layer.bias is not None:
            assert not layer.bias.any()
    for head, gain in ((agent.actor, 0.01), (agent.critic, 1.0)):  # the PPO heads keep the scripts' shared init
        w = head.weight.double()
        torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(w.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
