"""benchmarks/inference_cost.py: runs end to end at tiny sizes, and its analytic state sizes and FLOP formulas
equal what the models built by the training scripts actually hold and compute."""

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import load


bench = load("benchmarks/inference_cost.py", "inference_cost")

OBS_SPACE = gym.spaces.Box(0.0, 1.0, (16,), np.float32)  # T-Maze's
ACTION_SPACE = gym.spaces.Discrete(4)

# several sizes per model (shared transformer sizes x the model's own)
SIZES = {
    "agalite": [dict(n_layers=1, d_model=8, n_heads=1, d_head=4, d_ffc=8, eta=1, r=1),
                dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_ffc=12, eta=3, r=2),
                dict(n_layers=3, d_model=12, n_heads=3, d_head=5, d_ffc=7, eta=2, r=4)],
    "galite": [dict(n_layers=1, d_model=8, n_heads=1, d_head=4, d_ffc=8, eta=1),
               dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_ffc=12, eta=2),
               dict(n_layers=3, d_model=12, n_heads=3, d_head=5, d_ffc=7, eta=3)],
    "gtrxl": [dict(n_layers=1, d_model=8, n_heads=1, d_head=4, d_ffc=8, memory_len=1),
              dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_ffc=12, memory_len=5),
              dict(n_layers=3, d_model=12, n_heads=3, d_head=5, d_ffc=7, memory_len=9)],
    "lstm": [dict(d_model=8, lstm_hidden=3), dict(d_model=16, lstm_hidden=24), dict(d_model=5, lstm_hidden=11)],
}
SIZES["gtrxl_kv"] = [dict(sizes, kv_cache=True) for sizes in SIZES["gtrxl"]]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: intra-op threads only add waiting, badly so on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def script_or_skip(model):
    module = bench.load_script(model)
    if module is None:
        pytest.skip(f"{bench.SCRIPTS[model]} does not exist yet")
    return module


def test_quick_run_writes_the_csv_and_table(tmp_path):
    out = str(tmp_path / "ic")
    rows = bench.main(bench.Args(quick=True, out=out))
    with open(out + ".csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        written = list(reader)
    available = {m for m in bench.SCRIPTS if bench.load_script(m) is not None}
    expected = [(label, b) for _, label, _ in bench.configs(bench.QUICK, available) for b in bench.QUICK["batch_sizes"]]
    assert [(r["config"], int(r["batch"])) for r in written] == expected
    assert len(rows) == len(written)
    for r in written:
        assert float(r["time_median_ms"]) > 0
        assert float(r["time_p10_ms"]) <= float(r["time_median_ms"]) <= float(r["time_p90_ms"])
        assert int(r["flops_counted"]) > 0 and float(r["state_bytes_per_env"]) > 0
        assert int(r["train_peak_bytes"]) > 0 and int(r["train_saved_bytes"]) > 0
    table = open(out + ".md").read()
    if {"agalite", "gtrxl"} <= available:
        assert "| ratio |" in table and "AGaLiTe eta=2 r=2" in table and "GTrXL-4 KV" in table

    plot = load("plots/inference_cost_plot.py", "inference_cost_plot")
    plot.main(plot.Args(csv=out + ".csv", out=str(tmp_path / "fig")))
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").stat().st_size > 0


@pytest.mark.parametrize("model", ["agalite", "galite", "gtrxl", "gtrxl_kv", "lstm"])
def test_analytic_state_size_equals_the_state_tensors(model):
    module = script_or_skip(model)
    for sizes in SIZES[model]:
        agent, args = bench.build(module, sizes, OBS_SPACE, ACTION_SPACE, torch.device("cpu"))
        for B in (1, 3):
            state = agent.initial_state(B, torch.device("cpu"))
            assert all(s.shape[1] == B for s in state)
            assert bench.state_bytes_per_env(state) == bench.analytic_state_bytes(model, args), (sizes, B)
            # and the state a step returns is the same size
            _, new_state = agent.memory(torch.rand(1, B, 16), state, torch.ones(1, B))
            assert bench.state_bytes_per_env(new_state) == bench.analytic_state_bytes(model, args), (sizes, B)


@pytest.mark.parametrize("model", ["agalite", "galite", "gtrxl", "gtrxl_kv", "lstm"])
def test_analytic_flops_equal_the_flop_counter(model):
    module = script_or_skip(model)
    generator = torch.Generator().manual_seed(0)
    device = torch.device("cpu")
    for sizes in SIZES[model]:
        agent, args = bench.build(module, sizes, OBS_SPACE, ACTION_SPACE, device)
        for B in (1, 4):
            state = bench.nontrivial_state(model, agent, B, 16, device, 2, generator)
            counted, by_op = bench.count_flops(agent, state, B, 16, device, generator)
            assert counted == bench.analytic_flops(model, args, B, 16, 4), (sizes, B, by_op)


def test_gtrxl_state_is_made_full():
    module = script_or_skip("gtrxl")
    agent, args = bench.build(module, SIZES["gtrxl"][2], OBS_SPACE, ACTION_SPACE, torch.device("cpu"))
    cache, valid = bench.nontrivial_state("gtrxl", agent, 2, 16, torch.device("cpu"), 3, torch.Generator().manual_seed(0))
    assert valid.all()
    assert (cache.abs().sum(-1) > 0).all()  # every slot of every layer holds a written step


def test_compiled_acting_step_columns(tmp_path):
    """--compile times the scripts' own `act` compiled, next to the eager step (one model, to keep it short)."""
    out = str(tmp_path / "ic")
    rows = bench.main(bench.Args(quick=True, compile=True, models=("agalite",), paper_only=True, train_memory=False, out=out))
    assert rows and all(float(r["compiled_time_median_ms"]) > 0 and float(r["compile_s"]) > 0 for r in rows)
