"""The release's T-Maze protocol as options of every script: A2C as PPO with one epoch over one minibatch, the
release's heads, time-outs treated as terminal, and AGaLiTe's initialisation and tick as in the release."""

import dataclasses
import glob
import json
import os
import shlex
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro

from conftest import ROOT, load
from test_scripts import ACTION_SPACE, OBS_SPACE, SCRIPTS, SMALL, cli, make_agent


def rollout_batch(agent, T=12, B=3, seed=0):
    """A batch as the rollout stores it: observations, episode starts, actions sampled by the agent, and the
    agent's own log-probabilities and values (so the first PPO step has ratio 1), random advantages and returns."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(T, B, 7, generator=g, dtype=torch.float64)
    dones = (torch.rand(T, B, generator=g) < 0.15).double()
    state = agent.initial_state(B, "cpu")
    with torch.no_grad():
        actions, logprobs, _, values, _ = agent.get_action_and_value(obs, state, dones)
    advantages = torch.randn(T, B, generator=g, dtype=torch.float64)
    returns = values + torch.randn(T, B, generator=g, dtype=torch.float64)
    return obs, state, dones, actions, logprobs, advantages, returns, values


@pytest.mark.parametrize("script", SCRIPTS)
def test_ppo_with_one_epoch_over_one_minibatch_is_a2c(script):
    """The release trains T-Maze with A2C. PPO's first gradient step on a fresh batch has ratio 1 (the stored
    log-probabilities are the current ones) and the clipped value equals the value, so no clipping binds and its
    gradient is A2C's: -mean(A log pi) + vf_coef * 0.5 * mean((V - R)^2) - ent_coef * mean(H). With one epoch
    over one minibatch (`--update-epochs 1 --num-minibatches 1 --no-norm-adv`) that is the only step."""
    module, agent = make_agent(script)
    args = module.Args(**SMALL[script], norm_adv=False, update_epochs=1, num_minibatches=1, ent_coef=0.001)
    obs, state, dones, actions, logprobs, advantages, returns, values = rollout_batch(agent)

    def grads(loss):
        agent.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in agent.parameters()]

    ppo, stats = module.ppo_loss(agent, args, obs, state, dones, actions, logprobs, advantages, returns, values)
    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(obs, state, dones, actions)
    a2c = -(advantages * newlogprob).mean() + args.vf_coef * 0.5 * ((newvalue - returns) ** 2).mean() - args.ent_coef * entropy.mean()
    # (the values differ: PPO's policy term is -mean(A * ratio) with ratio = 1; the gradients are what must agree)
    for g_ppo, g_a2c in zip(grads(ppo), grads(a2c)):
        torch.testing.assert_close(g_ppo, g_a2c, rtol=1e-10, atol=1e-12)
    assert stats[5].item() == 0.0  # clipfrac: no ratio was clipped
    # with normalised advantages (our default) the same step is a different gradient
    args.norm_adv = True
    normed, _ = module.ppo_loss(agent, args, obs, state, dones, actions, logprobs, advantages, returns, values)
    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(obs, state, dones, actions)
    a2c = -(advantages * newlogprob).mean() + args.vf_coef * 0.5 * ((newvalue - returns) ** 2).mean() - args.ent_coef * entropy.mean()
    assert not all(torch.allclose(a, b) for a, b in zip(grads(normed), grads(a2c)))


@pytest.mark.parametrize("script", SCRIPTS)
def test_release_heads_and_gains(script):
    module = __import__(script)
    torch.manual_seed(0)
    agent = module.Agent(OBS_SPACE, ACTION_SPACE, module.Args(**SMALL[script], head_hidden=32, actor_gain=2**0.5, critic_gain=2**0.5))
    for head, n_out in ((agent.actor, 5), (agent.critic, 1)):
        hidden, tanh, out = head
        assert isinstance(tanh, torch.nn.Tanh) and hidden.out_features == 32 and out.out_features == n_out
        for layer in (hidden, out):  # orthogonal with gain sqrt(2), zero biases
            w = layer.weight.double()
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            torch.testing.assert_close(gram, 2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
            assert not layer.bias.any()
    default = module.Agent(OBS_SPACE, ACTION_SPACE, module.Args(**SMALL[script]))
    assert isinstance(default.actor, torch.nn.Linear)
    torch.testing.assert_close((default.actor.weight @ default.actor.weight.T).double(), 1e-4 * torch.eye(5, dtype=torch.float64), atol=1e-9, rtol=0)
    result = subprocess.run(cli(script, head_hidden=-1, num_envs=2, num_minibatches=2), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--head-hidden (-1) must be 0" in result.stderr and "Traceback" not in result.stderr


# The release's T-Maze settings per model, written out from its config/tmaze/*.yaml and src/agents/a2c.py (not from
# benchmarks/tmaze_ablation.py, which is what is checked against them): learning rate, entropy and value coefficients
# of its A2C loss  actor_loss + entropy_coef * (-entropy) + value_coef * mean((G_lambda - V)^2), optax's Adam (eps 1e-8).
RELEASE = {
    "ppo_agalite": dict(lr=1e-4, entropy_coef=0.001, value_coef=0.5),
    "ppo_galite": dict(lr=1e-4, entropy_coef=0.001, value_coef=0.5),
    "ppo_gtrxl": dict(lr=5e-4, entropy_coef=0.01, value_coef=0.5),
    "ppo_lstm": dict(lr=1e-4, entropy_coef=0.001, value_coef=0.5),
}
tmaze_ablation = load("benchmarks/tmaze_ablation.py", "tmaze_ablation")


def lambda_returns(rewards, values, dones, next_value, next_done, gamma, lam):
    """The release's targets, from their recursion: G_t = r_t + gamma (1 - d_{t+1}) ((1 - lam) V_{t+1} + lam G_{t+1}),
    where d_{t+1} = 1 when step t ended its episode (the next observation starts a new one), and G_T = V_T."""
    T = rewards.shape[0]
    G = torch.zeros_like(rewards)
    next_G, next_V, next_start = next_value, next_value, next_done
    for t in reversed(range(T)):
        G[t] = rewards[t] + gamma * (1 - next_start) * ((1 - lam) * next_V + lam * next_G)
        next_G, next_V, next_start = G[t], values[t], dones[t]
    return G


@pytest.mark.parametrize("script", SCRIPTS)
def test_release_protocol_loss_is_the_releases_a2c_loss(script):
    """Our PPO loss under benchmarks/tmaze_ablation.py's protocol flags, on GAE's advantages and returns, has the
    gradients of the release's A2C loss on its lambda-returns: -mean(log pi * sg(G - V)) - entropy_coef * mean(H)
    + value_coef * mean((G - V)^2), with no 1/2 on the value term (float64, a rollout with episode ends)."""
    module = __import__(script)
    release = RELEASE[script]
    args = tyro.cli(module.Args, args=shlex.split(tmaze_ablation.protocol(script.removeprefix("ppo_"))))
    assert (args.learning_rate, args.ent_coef, args.adam_eps) == (release["lr"], release["entropy_coef"], 1e-8)
    assert (args.update_epochs, args.num_minibatches, args.norm_adv, args.anneal_lr) == (1, 1, False, False)
    args = dataclasses.replace(args, **SMALL[script])  # small model sizes; the loss's settings stay the protocol's
    torch.manual_seed(0)
    agent = module.Agent(OBS_SPACE, ACTION_SPACE, args).to(torch.float64)

    T, B = 16, 3
    g = torch.Generator().manual_seed(1)
    obs = torch.rand(T, B, 7, generator=g, dtype=torch.float64)
    dones = (torch.rand(T, B, generator=g) < 0.2).double()
    dones[0] = 1.0
    rewards = torch.randn(T, B, generator=g, dtype=torch.float64)
    next_done = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    state = agent.initial_state(B, "cpu")
    with torch.no_grad():
        actions, logprobs, _, values, _ = agent.get_action_and_value(obs, state, dones)
        next_value = torch.randn(B, generator=g, dtype=torch.float64)
    advantages, returns = module.gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)
    G = lambda_returns(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    torch.testing.assert_close(returns, G, rtol=1e-12, atol=1e-12)  # GAE's returns are the lambda-returns

    def grads(loss):
        agent.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in agent.parameters()]

    ours, stats = module.ppo_loss(agent, args, obs, state, dones, actions, logprobs, advantages, returns, values)
    ours_grads = grads(ours)
    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(obs, state, dones, actions)
    actor = -(newlogprob * (G - values)).mean()
    value_term = release["value_coef"] * ((G - newvalue) ** 2).mean()
    entropy_term = release["entropy_coef"] * -entropy.mean()
    release_grads = grads(actor + entropy_term + value_term)
    for ours_g, release_g in zip(ours_grads, release_grads):
        torch.testing.assert_close(ours_g, release_g, rtol=1e-9, atol=1e-12)
    # the loss's parts, as logged: our value loss is 0.5 * MSE, weighted by --vf-coef 1.0
    torch.testing.assert_close(args.vf_coef * stats[1], value_term.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(-args.ent_coef * stats[2], entropy_term.detach(), rtol=1e-12, atol=0)
    # the earlier protocol (--vf-coef 0.5) gave the critic half the release's weight: another gradient
    half, _ = module.ppo_loss(agent, dataclasses.replace(args, vf_coef=0.5), obs, state, dones, actions, logprobs, advantages, returns, values)
    assert not all(torch.allclose(a, b) for a, b in zip(grads(half), release_grads))


@pytest.mark.parametrize("script", SCRIPTS)
def test_adam_eps_is_the_optimizers(script, tmp_path):
    """--adam-eps reaches the optimizer (read back from the run's checkpoint); the default is the release's 1e-8."""
    cmd = cli(script, total_timesteps=32, num_envs=2, num_steps=16, num_minibatches=2, env_kwargs=json.dumps({"corridor_length": 2}),
              cuda=False, adam_eps=1e-5, checkpoint_every=1)
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert [group["eps"] for group in checkpoint["optimizer"]["param_groups"]] == [1e-5]
    assert __import__(script).Args().adam_eps == 1e-8


def test_agalite_fused_layers_start_as_the_releases_separate_orthogonal_matrices():
    import ppo_agalite

    torch.manual_seed(0)
    args = ppo_agalite.Args()
    agent = ppo_agalite.Agent(OBS_SPACE, ACTION_SPACE, args)
    H, d, eta, D = args.n_heads, args.d_head, args.eta, args.d_model

    def assert_orthogonal(w):
        w = w.double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, 2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)

    for block in agent.layers:
        per_head = block.attention.proj.weight.view(H, 5 * d + 3 * eta, D)
        assert_orthogonal(per_head[:, : 5 * d].reshape(-1, D))  # k, q, v, beta, gamma of all heads: one matrix
        assert_orthogonal(per_head[:, 5 * d :].reshape(-1, D))  # p1, p2, p3 of all heads: another
        p_rows = per_head[:, 5 * d :].norm(dim=-1)
        torch.testing.assert_close(p_rows, torch.full_like(p_rows, 2**0.5))  # each p row of norm sqrt(2), not ~0.44
        for gate in (block.gate1, block.gate2):
            for part in [*gate.w.weight.split(D), *gate.u.weight.split(D), gate.u_g.weight]:
                assert_orthogonal(part)


TIMEOUT_DRIVER = """
import runpy, sys
import gymnasium as gym
import numpy as np
sys.path.insert(0, {root!r})
import envs


class NanFinalObservation(gym.Wrapper):
    # every 3rd step is a time-out whose final observation is NaN: only a bootstrap from it can see it
    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        if self.t == 3 and not terminated:
            return np.full_like(obs, np.nan), reward, False, True, info
        return obs, reward, terminated, truncated, info


gym.register("NanTimeoutTMaze-v0", entry_point=lambda **kwargs: NanFinalObservation(envs.make_env("TMaze-v0", **kwargs)))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("bootstrap", [True, False])
def test_time_outs_are_bootstrapped_unless_told_not_to(bootstrap, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(TIMEOUT_DRIVER.format(root=ROOT)))
    args = dict(env_id="NanTimeoutTMaze-v0", env_kwargs=json.dumps({"corridor_length": 6}), total_timesteps=64,
                num_envs=2, num_steps=32, num_minibatches=2, cuda=False, bootstrap_timeouts=bootstrap)
    result = subprocess.run([sys.executable, str(driver)] + cli("ppo_lstm", **args)[1:], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if bootstrap:  # the value of the NaN final observation entered the rewards
        assert result.returncode != 0 and "the loss is nan at iteration 1" in result.stderr
    else:  # the time-out is a terminal state: nothing reads its final observation
        assert result.returncode == 0, result.stderr
        assert glob.glob(str(tmp_path / "runs" / "*"))
