"""benchmarks/tmaze_ablation.py: each variant changes one protocol setting, and the table reads runs up to the budget."""

import dataclasses
import shlex

import numpy as np
import tyro

import ppo_agalite
from conftest import load

tmaze_ablation = load("benchmarks/tmaze_ablation.py", "tmaze_ablation")


def test_each_variant_changes_only_its_own_settings():
    parse = lambda flags: dataclasses.asdict(tyro.cli(ppo_agalite.Args, args=shlex.split(flags)))
    protocol = parse(tmaze_ablation.protocol("agalite"))
    changed = {}
    for variant, (_, flags) in tmaze_ablation.VARIANTS.items():
        args = parse(tmaze_ablation.protocol("agalite") + " " + flags)
        changed[variant] = {k: args[k] for k in args if args[k] != protocol[k]}
    assert changed == {
        "release": {},
        "time-limit bootstrap": {"bootstrap_timeouts": True},
        "linear heads": {"head_hidden": 0, "actor_gain": 0.01, "critic_gain": 1.0},
        "PPO update": {"update_epochs": 4, "num_minibatches": 4, "norm_adv": True},
        "frozen critic": {"vf_coef": 0.0},
    }
    # the ablations set a protocol setting to our default (the frozen critic is a probe, not a default)
    defaults = dataclasses.asdict(ppo_agalite.Args(adam_eps=1e-5))
    for variant, diff in changed.items():
        if variant != "frozen critic":
            assert all(defaults[k] == v for k, v in diff.items()), variant


def test_summary_reads_up_to_the_budget():
    steps = np.arange(1, 11, dtype=np.float64) * 1000  # 10 updates of 1,000 steps
    lengths = np.array([1000, 1000, 1000, 640, 500, 300, 200, 150, 130, 125], dtype=np.float64)
    success = np.array([0, 0, 0, 0.6, 1, 1, 1, 1, 1, 0.0])
    scalars = {
        "charts/episodic_length": (steps, lengths),
        "charts/success_rate": (steps, success),
        "charts/episodic_return": (steps, -lengths / 10),
        "losses/entropy": (steps, np.linspace(1.3, 0.4, 10)),
    }
    row = tmaze_ablation.summarize(scalars, budget=9000, time_limit=1000, final_frac=0.2)
    assert row["steps"] == 9000
    assert row["first_junction"] == 4000
    assert row["junction_share"] == 6 / 9
    assert row["success"] == 1.0  # the last 2 points up to 9,000 steps; the 0 at 10,000 is past the budget
    assert row["return"] == -14.0
    assert row["solved_at"] == 8000  # the 5-point mean of success reaches 0.9 first over points 3..7 (0.6, 1, 1, 1, 1)
    assert row["entropy_start"] == 1.3 and abs(row["entropy_end"] - 0.5) < 1e-12
    never = tmaze_ablation.summarize({"charts/episodic_length": (steps, np.full(10, 1000.0))}, 10_000, 1000)
    assert never["first_junction"] is None and never["junction_share"] == 0 and never["solved_at"] is None


def test_tags_replace_the_variants(monkeypatch):
    asked = []
    monkeypatch.setattr(tmaze_ablation, "run_dir", lambda args, tag, script, seed: asked.append((tag, script, seed)))
    args = tmaze_ablation.Args(tags=["protocol"], scripts=["agalite", "gtrxl"], seeds=[1])
    lines, missing = tmaze_ablation.table(args)
    assert asked == [("protocol", "agalite", 1), ("protocol", "gtrxl", 1)]  # no variant's tag is read
    assert missing == ["protocol agalite seed 1", "protocol gtrxl seed 1"] and len(lines) == 2


def test_grid_entries_pick_the_runs_with_those_options(tmp_path):
    runs = tmp_path / "runs"
    (runs / "TMaze-v0__protocolgb_agalite_L120__2__100").mkdir(parents=True)
    (runs / "TMaze-v0__protocolgb_agalite_L120_gate_bias-3__2__200").mkdir()
    plain = tmaze_ablation.Args(runs_dir=str(runs))
    biased = tmaze_ablation.Args(runs_dir=str(runs), grid=["gate_bias=-3"])
    assert tmaze_ablation.run_dir(plain, "protocolgb", "agalite", 2).endswith("protocolgb_agalite_L120__2__100")
    assert tmaze_ablation.run_dir(biased, "protocolgb", "agalite", 2).endswith("protocolgb_agalite_L120_gate_bias-3__2__200")
    assert tmaze_ablation.run_dir(biased, "protocolgb", "agalite", 1) is None
    assert "--grid env.corridor_length=120 gate_bias=-3 " in tmaze_ablation.sweep_command(biased, "release", "agalite")  # makes what it reads


def test_the_protocol_differs_between_models_only_in_their_own_settings():
    """One protocol, per model only the release's learning rate and entropy coefficient (and GTrXL's memory);
    the earlier protocol differs from it in Adam's eps, the value-loss weight and those per-model settings."""
    import ppo_gtrxl

    parse = lambda module, flags: dataclasses.asdict(tyro.cli(module.Args, args=shlex.split(flags)))
    agalite, gtrxl = parse(ppo_agalite, tmaze_ablation.protocol("agalite")), parse(ppo_gtrxl, tmaze_ablation.protocol("gtrxl"))
    shared = (set(agalite) & set(gtrxl)) - {"exp_name"}
    assert {k for k in shared if agalite[k] != gtrxl[k]} == {"learning_rate", "ent_coef"}
    assert (gtrxl["learning_rate"], gtrxl["ent_coef"], gtrxl["memory_len"]) == (5e-4, 0.01, 128)
    earlier = parse(ppo_agalite, tmaze_ablation.EARLIER_PROTOCOL)
    assert {k for k in agalite if agalite[k] != earlier[k]} == {"adam_eps", "vf_coef"}
    assert (agalite["adam_eps"], agalite["vf_coef"], earlier["adam_eps"], earlier["vf_coef"]) == (1e-8, 1.0, 1e-5, 0.5)
    # the corridor sweeps run each script with its own flags, and stop a run once it is solved
    command = tmaze_ablation.corridor_sweep_command("gtrxl")
    assert "--tag release " in command and "--scripts gtrxl " in command and "--learning-rate 5e-4 --ent-coef 0.01" in command
    assert "--stop-at-success 0.95" in command and "--grid env.corridor_length=60,120,200 --seeds 1 2 3" in command


def test_optimizer_checks_change_only_their_own_settings():
    """The attribution sweeps set one of the release's two optimizer settings back to the earlier protocol's; the
    gate-bias sweep adds only --gate-bias -3 (as a grid entry); the passive sweeps are the passive study's settings
    (the scripts' defaults with Adam eps 1e-5, the default when it ran) with only Adam's eps changed."""
    sweep = load("benchmarks/sweep.py", "sweep")
    parse = lambda flags: dataclasses.asdict(tyro.cli(ppo_agalite.Args, args=shlex.split(flags)))
    protocol = parse(tmaze_ablation.protocol("agalite"))
    defaults = dataclasses.asdict(ppo_agalite.Args(adam_eps=1e-5))
    commands = tmaze_ablation.optimizer_check_commands()
    assert len(commands) == 6
    changed = []
    for command in commands:
        head, _, flags = command.partition(" -- ")
        sweep_args = tyro.cli(sweep.Args, args=shlex.split(head)[2:])
        args = parse(flags)
        base = defaults if sweep_args.env_id == "TMazePassive-v0" else protocol
        diff = {k: args[k] for k in args if args[k] != base[k] and k not in ("compile", "stop_at_success", "num_steps")}
        changed.append((sweep_args.tag, sorted(sweep_args.grid), sweep_args.seeds, sweep_args.total_timesteps, diff))
    assert changed == [
        ("attr_eps", ["env.corridor_length=120"], [1, 2], 5_000_000, {"vf_coef": 0.5}),
        ("attr_vf", ["env.corridor_length=120"], [1, 2], 5_000_000, {"adam_eps": 1e-5}),
        ("attr_none", ["env.corridor_length=120"], [1, 2], 5_000_000, {"adam_eps": 1e-5, "vf_coef": 0.5}),
        ("releasegb", ["env.corridor_length=120", "gate_bias=-3"], [1, 2], 5_000_000, {}),
        ("passive_eps8", ["env.carried=true", "env.corridor_length=100"], [1, 2], 3_000_000, {"adam_eps": 1e-8}),
        ("passive_eps8", ["env.carried=true", "env.corridor_length=400"], [1, 2], 3_000_000, {"adam_eps": 1e-8}),
    ]
    # the earlier protocol's value of the setting each attribution sweep changes back
    earlier = parse(tmaze_ablation.EARLIER_PROTOCOL)
    assert (earlier["vf_coef"], earlier["adam_eps"]) == (0.5, 1e-5)
    assert "--num-steps 401" in commands[-1] and "--stop-at-success 0.95" in commands[-1]


def test_the_docs_results_table_is_the_committed_csv(tmp_path):
    """docs/tmaze_protocol.md's tables of the corridor, attribution and default-eps runs are printed from
    plots/results/tmaze_protocol.csv, tmaze_attribution.csv and tmaze_default_eps.csv (the sweeps' own summaries), so
    the page cannot drift from the CSVs; the table lists runs by model, corridor and seed (after the variant, if any)."""
    import os

    from conftest import ROOT

    with open(os.path.join(ROOT, "docs", "tmaze_protocol.md")) as f:
        page = f.read()
    for name in ("tmaze_protocol.csv", "tmaze_attribution.csv", "tmaze_default_eps.csv"):
        lines = tmaze_ablation.results_table(os.path.join(ROOT, "plots", "results", name))
        assert "\n".join(lines) + "\n" in page, name
    csv = tmp_path / "summary.csv"
    csv.write_text("script,corridor_length,seed,final_success,final_return,solved_at,sps,steps,wall_time_s,run_dir\n"
                   "lstm,60,1,0.5,-4.0,,1,4999168,1,r\ngtrxl,120,2,0.9,-9.0,300000,1,310000,1,r\nagalite,200,1,0.95,-17.0,1000000,1,1200000,1,r\n")
    assert tmaze_ablation.results_table(str(csv))[2:] == [
        "| AGaLiTe | 200 | 1 | 1.20M, solved at 1.00M | 0.95 | -17.0 |",
        "| GTrXL-128 | 120 | 2 | 0.31M, solved at 0.30M | 0.90 | -9.0 |",
        "| LSTM | 60 | 1 | 5M, not solved | 0.50 | -4.0 |",
    ]
    csv.write_text("variant,script,corridor_length,seed,final_success,final_return,solved_at,steps\n"
                   "eps alone,agalite,120,2,0.7,-9.3,1900000,1940000\nboth,agalite,120,2,0.6,-18.0,3000000,3060000\n"
                   "eps alone,agalite,120,1,0.5,-10.6,,4999168\n")
    assert tmaze_ablation.results_table(str(csv)) == [
        "| variant | model | corridor | seed | stopped at | final success | final return |",
        "|---|---|---:|---:|---|---:|---:|",
        "| eps alone | AGaLiTe | 120 | 1 | 5M, not solved | 0.50 | -10.6 |",
        "| eps alone | AGaLiTe | 120 | 2 | 1.94M, solved at 1.90M | 0.70 | -9.3 |",
        "| both | AGaLiTe | 120 | 2 | 3.06M, solved at 3.00M | 0.60 | -18.0 |",
    ]
