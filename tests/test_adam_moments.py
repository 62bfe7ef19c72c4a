"""benchmarks/adam_moments.py: the per-part statistics are those of the optimizer's own second moments, every entry is
counted once, AGaLiTe's projection rows go to the part the forward pass reads them as, and the step factor is
sqrt(v_hat) / (sqrt(v_hat) + eps)."""

import subprocess
import sys

import gymnasium as gym
import pytest
import torch

from conftest import ROOT, load

adam_moments = load("benchmarks/adam_moments.py", "adam_moments")
import ppo_agalite  # noqa: E402
import ppo_lstm  # noqa: E402

SMALL = dict(n_layers=2, d_model=16, n_heads=2, d_head=4, d_ffc=16, eta=3, r=2, head_hidden=8)


def trained_checkpoint(module, settings, steps=3, adam_eps=1e-8):
    """A checkpoint dict as the scripts write it, after `steps` Adam steps on random gradients whose scale differs
    per parameter (so that the parts' moments differ)."""
    torch.manual_seed(0)
    args = module.Args(**settings, adam_eps=adam_eps)
    env = gym.make(args.env_id)
    agent = module.Agent(env.observation_space, env.action_space, args)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=adam_eps)
    for _ in range(steps):
        for i, p in enumerate(agent.parameters()):
            p.grad = torch.randn_like(p) * 10.0 ** (-(i % 7))
        optimizer.step()
    checkpoint = {"script": f"{module.__name__}.py", "args": vars(args), "model": agent.state_dict(),
                  "optimizer": optimizer.state_dict(), "global_step": 123, "iteration": steps}
    return checkpoint, agent, optimizer


def root_v_hat(optimizer, parameter):
    state = optimizer.state[parameter]
    beta2 = optimizer.param_groups[0]["betas"][1]
    return (state["exp_avg_sq"].double() / (1 - beta2 ** float(state["step"]))).sqrt()


def test_agalite_parts_are_the_projection_rows_and_cover_every_entry():
    checkpoint, agent, optimizer = trained_checkpoint(ppo_agalite, SMALL)
    rows, _, step = adam_moments.moments_table(checkpoint, [1e-5, 1e-8])
    assert step == 3
    assert sum(row["n"] for row in rows) == sum(p.numel() for p in agent.parameters())
    by_key = {(row["layer"], row["part"]): row for row in rows}
    attention = agent.layers[1].attention
    d, eta, H = attention.d_head, attention.eta, attention.n_heads
    # beta: rows 3d..4d of each head's block of 5d + 3 eta rows, of the weight and the bias
    weight = root_v_hat(optimizer, attention.proj.weight).view(H, 5 * d + 3 * eta, -1)[:, 3 * d: 4 * d]
    bias = root_v_hat(optimizer, attention.proj.bias).view(H, 5 * d + 3 * eta)[:, 3 * d: 4 * d]
    expected = torch.cat([weight.reshape(-1), bias.reshape(-1)])
    row = by_key[(1, "attention.proj beta")]
    assert row["n"] == expected.numel() == H * d * (16 + 1)
    assert row["median"] == pytest.approx(expected.quantile(0.5).item(), rel=1e-12)
    assert row["below"][1e-5] == pytest.approx((expected < 1e-5).double().mean().item())
    assert row["factor"][1e-5] == pytest.approx((expected / (expected + 1e-5)).median().item(), rel=1e-12)
    # p3: the last eta rows of each head
    p3 = root_v_hat(optimizer, attention.proj.weight).view(H, 5 * d + 3 * eta, -1)[:, 5 * d + 2 * eta:]
    assert by_key[(1, "attention.proj p3")]["n"] == p3.numel() + H * eta
    assert {"gate1.b_g", "gate1.w", "ffc", "ln1", "attention.out"} <= {part for layer, part in by_key if layer == 0}
    assert (None, "embed") in by_key and (None, "actor") in by_key


def test_merged_layers_and_layer_choice():
    checkpoint, agent, _ = trained_checkpoint(ppo_agalite, SMALL)
    per_layer, _, _ = adam_moments.moments_table(checkpoint, [1e-5])
    merged, _, _ = adam_moments.moments_table(checkpoint, [1e-5], merge_layers=True)
    assert sum(r["n"] for r in merged) == sum(r["n"] for r in per_layer)
    assert {r["layer"] for r in merged} == {None}
    first, _, _ = adam_moments.moments_table(checkpoint, [1e-5], layers=[0])
    assert {r["layer"] for r in first} == {None, 0}
    chosen, _, _ = adam_moments.moments_table(checkpoint, [1e-5], merge_layers=True, parts_wanted=["attention.proj", "gate1"])
    assert {r["part"] for r in chosen} == {f"attention.proj {p}" for p in adam_moments.AGALITE_PROJ_PARTS} | {"gate1.b_g", "gate1.w", "gate1.u", "gate1.u_g"}


def test_step_factor_falls_with_eps_and_lstm_is_grouped_by_module():
    checkpoint, _, _ = trained_checkpoint(ppo_lstm, dict(lstm_hidden=8, head_hidden=8))
    rows, _, _ = adam_moments.moments_table(checkpoint, [1e-3, 1e-5, 1e-8])
    parts = {row["part"] for row in rows}
    assert {"lstm_x", "lstm_h", "embed", "actor", "critic"} <= parts
    for row in rows:
        assert row["factor"][1e-3] <= row["factor"][1e-5] <= row["factor"][1e-8] <= 1.0


def test_command_line_reads_a_run_and_refuses_a_missing_one(tmp_path):
    checkpoint, _, _ = trained_checkpoint(ppo_agalite, SMALL)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(checkpoint, run / "checkpoint.pt")
    out = subprocess.run([sys.executable, "benchmarks/adam_moments.py", str(run), "--merge-layers"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| all | attention.proj gamma |" in out.stdout and "Adam step 3" in out.stdout
    out = subprocess.run([sys.executable, "benchmarks/adam_moments.py", str(tmp_path / "nothing")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1


def test_side_by_side_has_a_row_per_part_of_any_model_and_a_column_per_checkpoint():
    agalite, _, _ = trained_checkpoint(ppo_agalite, SMALL)
    lstm, _, _ = trained_checkpoint(ppo_lstm, dict(lstm_hidden=8, head_hidden=8))
    a_rows, _, _ = adam_moments.moments_table(agalite, [1e-5], merge_layers=True)
    l_rows, _, _ = adam_moments.moments_table(lstm, [1e-5], merge_layers=True)
    lines = adam_moments.side_by_side([("a", a_rows), ("l", l_rows)], 1e-5)
    assert lines[0] == "| layer | part | a | l |"
    body = {line.split(" | ")[1]: line for line in lines[2:]}
    assert set(body) == {r["part"] for r in a_rows} | {r["part"] for r in l_rows}
    gamma = next(r for r in a_rows if r["part"] == "attention.proj gamma")
    assert body["attention.proj gamma"] == f"| all | attention.proj gamma | {gamma['median']:.1e} ({gamma['factor'][1e-5]:.2f}) | - |"
    assert body["lstm_h"].split(" | ")[2] == "-"
