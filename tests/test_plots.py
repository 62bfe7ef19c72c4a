"""plots/learning_curves.py, plots/sweep_plot.py (and plots/tb_runs.py) on small synthetic TensorBoard runs,
the confidence-interval math on known examples, and benchmarks/sweep.py's resume logic with a stub
script in place of the training scripts."""

import csv
import json
import math
import os
import shutil
import sys

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import tyro
from torch.utils.tensorboard import SummaryWriter

from conftest import load


tb_runs = load("plots/tb_runs.py", "tb_runs")
learning_curves = load("plots/learning_curves.py", "learning_curves")
sweep_plot = load("plots/sweep_plot.py", "sweep_plot")
sweep_tool = load("benchmarks/sweep.py", "sweep_tool")

STEP = 2048  # one PPO iteration of the default sizes
POINTS = 30


def plateau(exp_name, length, seed):
    """Final success rate of a synthetic run: agalite solves both corridors, lstm loses the long one."""
    base = 0.9 if exp_name == "ppo_agalite" else (0.5 if length == 10 else 0.3)
    return base + 0.05 * (seed - 1)


def write_run(runs_dir, exp_name, length, seed, unix_time, scale=1.0, budget=STEP * POINTS):
    """A run as the scripts write it: directory name, hyperparameters table, the charts/ scalars (POINTS of them: a
    `budget` above STEP * POINTS makes a run that is still going)."""
    env_kwargs = json.dumps({"corridor_length": length})
    writer = SummaryWriter(os.path.join(runs_dir, f"TMaze-v0__{exp_name}__{seed}__{unix_time}"))
    params = {"exp_name": exp_name, "seed": seed, "env_id": "TMaze-v0", "env_kwargs": env_kwargs, "total_timesteps": budget,
              "num_envs": 16, "num_steps": 128}  # one iteration: STEP
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in params.items()))
    for i in range(POINTS):
        success = scale * plateau(exp_name, length, seed) * min(1.0, i / 10)  # ramps up, flat from point 10 on
        writer.add_scalar("charts/success_rate", success, (i + 1) * STEP)
        writer.add_scalar("charts/episodic_return", 5 * success - 1, (i + 1) * STEP)
        writer.add_scalar("charts/SPS", 1000, (i + 1) * STEP)
    writer.close()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """2 scripts x 2 corridor lengths x 2 seeds, plus an older duplicate of one run that must be ignored."""
    root = str(tmp_path_factory.mktemp("runs"))
    for exp_name in ("ppo_agalite", "ppo_lstm"):
        for length in (10, 60):
            for seed in (1, 2):
                write_run(root, exp_name, length, seed, 1_700_000_100 + length)  # distinct dirs, as real runs' times are
    write_run(root, "ppo_agalite", 60, 1, 1_700_000_000, scale=0.0)  # older: all zeros
    return root


def assert_figure_files(out):
    for ext, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):
        with open(out + ext, "rb") as f:
            data = f.read()
        assert data.startswith(magic) and len(data) > 2000, out + ext


# ---------------------------------------------------------------- statistics


def test_t_interval_known_values():
    # two-sided 95% Student t quantiles from tables
    for df, expected in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert tb_runs.t_interval_factor(0.95, df) == pytest.approx(expected, abs=1e-4)
    mean, low, high = tb_runs.mean_ci([1.0, 2.0, 3.0], "t")  # std 1, n 3: half-width 4.3027 / sqrt(3)
    assert mean == 2.0
    assert high - mean == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    assert mean - low == pytest.approx(high - mean)


def test_bootstrap_interval_known_values():
    # two seeds 0 and 1: a resampled mean is 0, 0.5 or 1 (probabilities 1/4, 1/2, 1/4), so the 2.5% and 97.5%
    # percentiles are 0 and 1
    mean, low, high = tb_runs.mean_ci([0.0, 1.0], "bootstrap")
    assert (mean, low, high) == (0.5, 0.0, 1.0)
    # equal seeds: no spread; one seed: the band collapses onto the mean
    mean, low, high = tb_runs.mean_ci(np.full((3, 4), 0.7), "bootstrap")
    assert np.allclose(low, 0.7) and np.allclose(high, 0.7)
    assert tb_runs.mean_ci([0.3], "t") == (0.3, 0.3, 0.3)
    # columns are separate; reproducible; close to the t interval with many seeds
    samples = np.random.default_rng(1).normal(size=(40, 2)) + np.array([0.0, 10.0])
    mean, low, high = tb_runs.mean_ci(samples, "bootstrap")
    again = tb_runs.mean_ci(samples, "bootstrap")
    assert np.array_equal(low, again[1]) and np.array_equal(high, again[2])
    _, t_low, t_high = tb_runs.mean_ci(samples, "t")
    assert np.all(low < mean) and np.all(mean < high) and abs(mean[1] - 10) < 1
    assert np.allclose(high - low, t_high - t_low, rtol=0.2)
    with pytest.raises(ValueError, match="unknown CI method"):
        tb_runs.mean_ci([1.0, 2.0], "normal")


def test_smooth_final_and_hparams():
    assert np.allclose(tb_runs.smooth([0, 2, 4, 6], 2), [0, 1, 3, 5])
    assert np.allclose(tb_runs.smooth([0, 2, 4, 6], 1), [0, 2, 4, 6])
    assert tb_runs.final_value(np.arange(1, 11), 0.2) == 9.5  # last 2 of 10
    assert tb_runs.final_value(np.arange(1, 11), 0.25) == 9.0  # ceil(2.5) = last 3
    assert tb_runs.final_value([4.0], 0.1) == 4.0
    steps, success = np.arange(1, 11) * 100, np.array([0, 1, 0, 1, 1, 1, 1, 0.5, 1, 1])
    assert tb_runs.first_solved_step(steps, success, 0.9, 5) == 800  # points 3..7 (steps 400-800) average 0.9, 2..6 0.8
    assert tb_runs.first_solved_step(steps, success, 0.9, 1) == 200
    assert tb_runs.first_solved_step(steps, success, 0.95, 8) is None
    assert tb_runs.first_solved_step(steps[:3], success[:3], 0.5, 5) is None  # fewer points than the window
    params = tb_runs.parse_hparams('|param|value|\n|-|-|\n|env_id|TMaze-v0|\n|env_kwargs|{"corridor_length": 60}|\n|seed|1|')
    assert params == {"env_id": "TMaze-v0", "env_kwargs": '{"corridor_length": 60}', "seed": "1"}
    assert tb_runs.parse_env_kwargs(params["env_kwargs"]) == {"corridor_length": 60}
    assert tb_runs.parse_env_kwargs("{'corridor_length': 60}") == {"corridor_length": 60}
    with pytest.raises(ValueError, match="key=value"):
        tb_runs.parse_filters(["corridor_length"])


# ---------------------------------------------------------------- reading runs


def test_load_runs_identity_filters_and_duplicates(runs_dir):
    notes = []
    runs = tb_runs.load_runs(runs_dir, log=notes.append)
    assert len(runs) == 8  # the older duplicate is dropped, with a note
    assert len(notes) == 1 and "1700000000" in notes[0]
    run = [r for r in runs if r["exp_name"] == "ppo_agalite" and r["env_kwargs"] == {"corridor_length": 60} and r["seed"] == "1"][0]
    assert run["dir"].endswith("__1700000160")
    steps, values = run["scalars"]["charts/success_rate"]
    assert len(steps) == POINTS and steps[0] == STEP and values[-1] == pytest.approx(0.9)

    filtered = tb_runs.load_runs(runs_dir, tb_runs.parse_filters(["corridor_length=60", "exp_name=ppo_lstm"]), log=notes.append)
    assert {(r["exp_name"], r["env_kwargs"]["corridor_length"]) for r in filtered} == {("ppo_lstm", 60)}
    with pytest.raises(ValueError, match="passes the filters"):
        tb_runs.load_runs(runs_dir, tb_runs.parse_filters(["corridor_length=999"]), log=notes.append)
    with pytest.raises(ValueError, match="does not exist"):
        tb_runs.load_runs(os.path.join(runs_dir, "nope"))


def test_no_runs_found(tmp_path):
    with pytest.raises(ValueError, match="no TensorBoard runs found"):
        learning_curves.main(learning_curves.Args(runs_dir=str(tmp_path), out=str(tmp_path / "x")))


# ---------------------------------------------------------------- the plots


def test_learning_curves(runs_dir, tmp_path, capsys):
    out = str(tmp_path / "results" / "tmaze_curves")
    args = tyro.cli(learning_curves.Args, args=["--runs-dir", runs_dir, "--smooth", "3", "--out", out])
    assert learning_curves.main(args) == [out + ".png", out + ".pdf"]
    assert_figure_files(out)
    printed = capsys.readouterr().out
    # one line per (env, metric, exp_name), mean over 2 seeds of the last (flat) points
    assert "TMaze-v0 (corridor_length=60) | charts/success_rate | ppo_lstm (n=2): final mean 0.325" in printed
    assert "TMaze-v0 (corridor_length=10) | charts/success_rate | ppo_agalite (n=2): final mean 0.925" in printed

    # the band of one line: seeds 1 and 2 of lstm L60 differ by 0.05 once flat: the bootstrap band is their range
    lstm60 = tb_runs.load_runs(runs_dir, tb_runs.parse_filters(["corridor_length=60", "exp_name=ppo_lstm"]))
    line = learning_curves.line_over_seeds(lstm60, "charts/success_rate", 1, 50, "bootstrap", 2000)
    assert line["n"] == 2 and line["grid"][0] == STEP and line["grid"][-1] == STEP * POINTS
    assert line["low"][-1] == pytest.approx(0.3) and line["high"][-1] == pytest.approx(0.35)
    assert learning_curves.line_over_seeds(lstm60, "charts/nothing", 1, 50, "t", 10) is None

    # a filter and a tag no run has: only the known metrics are drawn; no known metric at all is an error
    out2 = str(tmp_path / "filtered")
    args = tyro.cli(learning_curves.Args, args=["--runs-dir", runs_dir, "--filter", "corridor_length=60", "--metrics", "charts/success_rate", "charts/missing", "--ci", "t", "--out", out2])
    learning_curves.main(args)
    assert_figure_files(out2)
    assert "no run logged 'charts/missing'" in capsys.readouterr().out
    with pytest.raises(ValueError, match="logged any of"):
        learning_curves.main(learning_curves.Args(runs_dir=runs_dir, metrics=["charts/missing"], out=out2))

    # --labels renames an exp_name in the legend (and the printed lines); a name no run has, or no "=", is an error
    args = tyro.cli(learning_curves.Args, args=["--runs-dir", runs_dir, "--filter", "corridor_length=60", "--labels", "ppo_lstm=LSTM-600", "--out", out2])
    learning_curves.main(args)
    printed = capsys.readouterr().out
    assert "| charts/success_rate | LSTM-600 (n=2): final mean 0.325" in printed and "| ppo_agalite (n=2)" in printed
    with pytest.raises(ValueError, match="no run has: \\['ppo_lsmt'\\]"):
        learning_curves.main(learning_curves.Args(runs_dir=runs_dir, labels=["ppo_lsmt=LSTM"], out=out2))
    with pytest.raises(ValueError, match="exp_name=name pairs"):
        learning_curves.main(learning_curves.Args(runs_dir=runs_dir, labels=["LSTM"], out=out2))


def test_learning_curves_from_saved_csv(runs_dir, tmp_path, capsys):
    """--save-csv keeps the drawn points; --csv draws the same lines from them (the runs need not exist)."""
    points = str(tmp_path / "curves.csv")
    common = ["--smooth", "3", "--metrics", "charts/success_rate", "charts/episodic_return", "--out", str(tmp_path / "a")]
    learning_curves.main(tyro.cli(learning_curves.Args, args=["--runs-dir", runs_dir, "--save-csv", points] + common))
    from_runs = [line for line in capsys.readouterr().out.splitlines() if "final mean" in line]
    with open(points, newline="") as f:
        rows = list(csv.DictReader(f))
    # 8 runs kept (the older duplicate dropped) x 2 metrics x 30 points; SPS was not drawn, so not saved
    assert len(rows) == 8 * 2 * POINTS and {r["metric"] for r in rows} == {"charts/success_rate", "charts/episodic_return"}
    assert {r["env_kwargs"] for r in rows} == {'{"corridor_length": 10}', '{"corridor_length": 60}'}
    learning_curves.main(tyro.cli(learning_curves.Args, args=["--csv", points, "--runs-dir", str(tmp_path / "gone")] + common))
    from_csv = [line for line in capsys.readouterr().out.splitlines() if "final mean" in line]
    assert len(from_runs) == 8 and from_csv == from_runs

    runs = tb_runs.load_points_csv(points, tb_runs.parse_filters(["corridor_length=60", "exp_name=ppo_lstm"]))
    assert [(r["env_kwargs"], r["seed"]) for r in runs] == [({"corridor_length": 60}, "1"), ({"corridor_length": 60}, "2")]
    with pytest.raises(ValueError, match="passes the filters"):
        tb_runs.load_points_csv(points, tb_runs.parse_filters(["seed=9"]))
    with pytest.raises(ValueError, match="does not exist"):
        tb_runs.load_points_csv(str(tmp_path / "none.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("script,seed\nagalite,1\n")
    with pytest.raises(ValueError, match="written by --save-csv"):
        tb_runs.load_points_csv(str(bad))


def test_a_figure_csv_grows_run_by_run_with_keep_csv_runs(tmp_path, capsys):
    """Runs made in two sessions on two machines (the first session's run directories gone): --keep-csv-runs adds
    the second session's runs to the CSV, a run present again replaces its old rows, and the figure drawn from the
    merged CSV equals the one drawn from all the runs at once."""
    first, second, every = (str(tmp_path / name) for name in ("first", "second", "every"))
    for seed in (1, 2):
        write_run(first, "ppo_agalite", 60, seed, 1_700_000_100)
        write_run(every, "ppo_agalite", 60, seed, 1_700_000_100)
    write_run(first, "ppo_lstm", 60, 1, 1_700_000_100, scale=0.0)  # redone in the second session
    for seed in (1, 2):
        write_run(second, "ppo_lstm", 60, seed, 1_700_000_200)
        write_run(every, "ppo_lstm", 60, seed, 1_700_000_200)
    write_run(second, "ppo_agalite", 60, 3, 1_700_000_200, budget=STEP * (POINTS + 1))  # still going: not added
    points = str(tmp_path / "curves.csv")
    common = ["--smooth", "3", "--metrics", "charts/success_rate", "--out", str(tmp_path / "fig")]
    learning_curves.main(tyro.cli(learning_curves.Args, args=["--runs-dir", first, "--save-csv", points] + common))
    learning_curves.main(tyro.cli(learning_curves.Args, args=["--runs-dir", second, "--save-csv", points, "--keep-csv-runs"] + common))
    out = capsys.readouterr().out
    merged = [line for line in out.splitlines() if "final mean" in line][-2:]
    assert f"TMaze-v0__ppo_agalite__3__1700000200 is not finished (step {STEP * POINTS:,} of {STEP * (POINTS + 1):,}); left out" in out
    assert_figure_files(str(tmp_path / "fig"))
    with open(points, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({(r["exp_name"], r["seed"]) for r in rows}) == [("ppo_agalite", "1"), ("ppo_agalite", "2"), ("ppo_lstm", "1"), ("ppo_lstm", "2")]
    assert len(rows) == 4 * POINTS  # the first session's ppo_lstm seed 1 (all zeros) replaced, not kept beside
    learning_curves.main(tyro.cli(learning_curves.Args, args=["--runs-dir", every] + common))
    assert [line for line in capsys.readouterr().out.splitlines() if "final mean" in line] == merged
    assert "ppo_lstm (n=2): final mean 0.325 " in merged[1]  # seeds 1 and 2 of the second session: 0.3, 0.35
    with pytest.raises(ValueError, match="keep-csv-runs"):
        learning_curves.main(tyro.cli(learning_curves.Args, args=["--runs-dir", second, "--keep-csv-runs"] + common))


def write_craftax_run(runs_dir, exp_name, seed, rates, points=20):
    """A Craftax run as the scripts log it: achievements/<name> per update (constant `rates` here)."""
    writer = SummaryWriter(os.path.join(runs_dir, f"Craftax-Classic-Symbolic-v1__{exp_name}__{seed}__1700000000"))
    params = {"exp_name": exp_name, "seed": seed, "env_id": "Craftax-Classic-Symbolic-v1"}
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in params.items()))
    for i in range(points):
        for name, rate in rates.items():
            writer.add_scalar(f"achievements/{name}", rate if i >= points // 2 else 0.0, (i + 1) * STEP)
    writer.close()


def test_craftax_table_from_runs_of_two_sessions(tmp_path):
    """craftax_achievements.py: --save-csv keeps each run's rates, --keep-csv-runs adds another session's runs to
    them, --csv makes the same table without the runs; the rates are the last 10% of each run, averaged over seeds."""
    craftax_achievements = load("plots/craftax_achievements.py", "craftax_achievements")
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    write_craftax_run(first, "agalite", 1, {"collect_wood": 0.8, "place_table": 0.2})
    write_craftax_run(second, "agalite", 2, {"collect_wood": 0.6, "place_table": 0.0})
    write_craftax_run(second, "lstm", 1, {"collect_wood": 0.5, "place_table": 0.1})
    rates, out = str(tmp_path / "rates.csv"), str(tmp_path / "table")
    run = lambda *argv: craftax_achievements.main(tyro.cli(craftax_achievements.Args, args=["--out", out, *argv]))  # noqa: E731
    run("--runs-dir", first, "--save-csv", rates)
    run("--runs-dir", second, "--save-csv", rates, "--keep-csv-runs")
    merged = open(out + ".md").read()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in merged.splitlines() if line.startswith("| ")}
    assert rows["achievement"] == ["agalite", "lstm"]
    assert rows["collect_wood"] == ["70.0", "50.0"] and rows["place_table"] == ["10.0", "10.0"]
    assert rows["mean over achievements"] == ["40.0", "30.0"]
    assert "agalite: 2 runs, to steps 40,960, 40,960" in merged
    run("--csv", rates)
    assert open(out + ".md").read() == merged
    run("--csv", rates, "--filter", "exp_name=lstm")
    assert "| achievement | lstm |" in open(out + ".md").read()
    with pytest.raises(ValueError, match="keep-csv-runs"):
        run("--csv", rates, "--keep-csv-runs")
    bad = tmp_path / "points.csv"
    bad.write_text(",".join(tb_runs.POINTS_CSV_COLUMNS) + "\n")  # a learning-curve CSV is not a rates CSV
    with pytest.raises(ValueError, match="written by --save-csv"):
        run("--csv", str(bad))


def test_sweep_plot_from_events(runs_dir, tmp_path):
    args = sweep_plot.Args(runs_dir=runs_dir, out=str(tmp_path / "sweep"))
    points = sweep_plot.points_from_runs(args)
    finals = {}
    for (env, line), x, seed, value in points:
        assert env == "TMaze-v0"
        finals.setdefault((line, x), []).append(value)
    assert sorted(finals) == [("agalite", 10.0), ("agalite", 60.0), ("lstm", 10.0), ("lstm", 60.0)]
    assert np.mean(finals[("lstm", 60.0)]) == pytest.approx(0.325)
    assert sorted(finals[("agalite", 10.0)]) == pytest.approx([0.9, 0.95])
    assert sweep_plot.main(args) == [str(tmp_path / "sweep.png"), str(tmp_path / "sweep.pdf")]
    assert_figure_files(str(tmp_path / "sweep"))
    with pytest.raises(ValueError, match="has both"):
        sweep_plot.main(sweep_plot.Args(runs_dir=runs_dir, x_key="n_distractors", out=str(tmp_path / "x")))
    assert sweep_plot.line_name("sweep_gtrxl_L120", ["ppo_", "sweep_"]) == "gtrxl"
    assert sweep_plot.line_name("passive_lstm_L50_carriedTrue", ["passive_"]) == "lstm_carriedTrue"
    assert sweep_plot.line_name("passive_lstm_L50_carriedTrue", ["passive_"], ["_carriedTrue"]) == "lstm"
    assert sweep_plot.line_name("passive_agalite_L100_carriedTrue_gate_bias-3", ["passive_"], drop=["_carriedTrue"]) == "agalite_gate_bias-3"
    assert sweep_plot.line_name("passive_agalite_L100_carriedTrue", ["passive_"], drop=["_carriedTrue"]) == "agalite"
    assert sweep_plot.line_name("sweep_gtrxl_L12_memory_len64", ["sweep_"]) == "gtrxl_memory_len64"
    # --rename: two lines into one
    renamed = sweep_plot.points_from_runs(sweep_plot.Args(runs_dir=runs_dir, rename=["agalite=memory", "lstm=memory"]))
    assert sorted({line for (_, line), *_ in renamed}) == ["memory"] and len(renamed) == len(points)


def test_sweep_plot_steps_to_solve(runs_dir, tmp_path, capsys):
    """Success ramps up to its plateau by point 10: with threshold 0.85 over 5 points, the agalite runs (plateau 0.9
    and 0.95) are solved at points 14 and 13; the lstm runs (plateau 0.3-0.55) never, and are left out."""
    args = sweep_plot.Args(runs_dir=runs_dir, metric="solved_at", solved_threshold=0.85, out=str(tmp_path / "solved"))
    points = sweep_plot.points_from_runs(args)
    solved = sorted((line, x, value) for (_, line), x, _, value in points)
    assert solved == [("agalite", 10.0, 13 * STEP), ("agalite", 10.0, 14 * STEP), ("agalite", 60.0, 13 * STEP), ("agalite", 60.0, 14 * STEP)]
    assert "4 run(s) never solved the task" in capsys.readouterr().out
    sweep_plot.main(args)
    assert_figure_files(str(tmp_path / "solved"))


def test_sweep_plot_from_csv(tmp_path, capsys):
    path = tmp_path / "summary.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["script", "corridor_length", "seed"] + sweep_tool.STAT_COLUMNS)
        writer.writeheader()
        for script in ("agalite", "lstm"):
            for length in (10, 60):
                for seed in (1, 2):
                    writer.writerow({"script": script, "corridor_length": length, "seed": seed,
                                     "final_success": plateau("ppo_" + script, length, seed), "final_return": "",
                                     "steps": 1000, "wall_time_s": 1.0, "run_dir": "runs/x"})
    out = str(tmp_path / "from_csv")
    sweep_plot.main(tyro.cli(sweep_plot.Args, args=["--csv", str(path), "--ci", "t", "--out", out]))
    assert_figure_files(out)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("lstm")]
    # lstm at 60: seeds 0.3 and 0.35: mean 0.325, t half-width 12.706 * 0.0354 / sqrt(2) = 0.318
    assert rows[1] == ["lstm", "60", "2", "0.325", "0.007", "0.643"]
    with pytest.raises(ValueError, match="no row"):
        sweep_plot.main(sweep_plot.Args(csv=str(path), metric="return", out=out))
    with pytest.raises(ValueError, match="not a column"):
        sweep_plot.main(sweep_plot.Args(csv=str(path), filter=["arch=lstm"], out=out))


def test_sweep_plot_csv_line_columns_and_unsolved(tmp_path, capsys):
    """--line-columns names the lines as the sweep names its runs (rows without a value stay on the plain script's
    line; --plain-values likewise); --rename works on CSV lines; --show-unsolved draws the rows without solved_at at
    the steps they ran, outside the means, also for a line that solved nothing."""
    path = tmp_path / "kept.csv"
    rows = [("agalite", "", "", 50, 1, "473000", "473000"), ("agalite", "", "", 50, 2, "225000", ""),
            ("agalite", "", "", 100, 1, "", "3000000"), ("agalite", "-3", "0.001", 200, 1, "180000", ""),
            ("agalite", "-4", "0.001", 400, 1, "616000", ""), ("agalite", "-4", "0.001", 400, 2, "", "900000"),
            ("gtrxl", "", "", 50, 1, "33000", ""), ("gtrxl", "", "0.001", 400, 1, "", "2200000"), ("lstm", "", "", 50, 1, "", "")]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["script", "corridor_length", "gate_bias", "learning_rate", "seed"] + sweep_tool.STAT_COLUMNS, restval="")
        writer.writeheader()
        for script, bias, lr, length, seed, solved_at, steps in rows:
            writer.writerow({"script": script, "corridor_length": length, "gate_bias": bias, "learning_rate": lr, "seed": seed,
                             "solved_at": solved_at, "steps": steps})
    columns = ["script", "gate_bias", "learning_rate"]
    args = sweep_plot.Args(csv=str(path), metric="solved_at", line_columns=columns, show_unsolved=True, ci="t", logx=True, logy=True,
                           out=str(tmp_path / "steps"))
    points = sweep_plot.points_from_csv(args)
    assert sorted((line, x, value) for (_, line), x, _, value in points) == [
        ("agalite", 50.0, 225000.0), ("agalite", 50.0, 473000.0), ("agalite_gate_bias-3_learning_rate0.001", 200.0, 180000.0),
        ("agalite_gate_bias-4_learning_rate0.001", 400.0, 616000.0), ("gtrxl", 50.0, 33000.0)]
    assert "4 row(s) have no solved_at (never solved)" in capsys.readouterr().out
    # the lstm row ran no recorded steps: no cross
    assert sorted((line, x, steps) for (_, line), x, _, steps in sweep_plot.unsolved_from_csv(args)) == [
        ("agalite", 100.0, 3000000.0), ("agalite_gate_bias-4_learning_rate0.001", 400.0, 900000.0), ("gtrxl_learning_rate0.001", 400.0, 2200000.0)]
    # runs at one x are drawn side by side around it, so that two capped at the same steps do not hide each other
    spread = sweep_plot.spread_crosses([("a", 400.0, 1, 3e6), ("b", 400.0, 1, 3e6), ("b", 400.0, 2, 3e6), ("a", 100.0, 1, 3e6)], logx=True)
    assert spread[0] < spread[1] < spread[2] and spread[3] == 100.0 and np.isclose(spread[0] * spread[2], 400.0 ** 2)
    assert all(abs(np.log10(x / 400.0)) <= 0.02 + 1e-12 for x in spread[:3])
    assert np.allclose(sweep_plot.spread_crosses([("a", 10.0, 1, 1.0), ("b", 10.0, 1, 1.0), ("a", 60.0, 1, 1.0)], logx=False), [9.5, 10.5, 60.0])
    # all unsolved runs at one x: the figure's x range sets the spacing (not the unsolved runs' own, which is 0)
    assert np.allclose(sweep_plot.spread_crosses([("a", 200.0, 1, 1.0), ("b", 200.0, 1, 1.0)], logx=False, all_x=[60.0, 120.0]), [198.6, 201.4])
    sweep_plot.main(args)
    assert_figure_files(str(tmp_path / "steps"))
    printed = capsys.readouterr().out
    assert "gtrxl_learning_rate0.001                    400   not solved within 2.2e+06 steps (seed 1)" in printed
    assert [row.split()[:4] for row in printed.splitlines() if row.startswith("agalite_gate_bias-4")] == [
        ["agalite_gate_bias-4_learning_rate0.001", "400", "not", "solved"], ["agalite_gate_bias-4_learning_rate0.001", "400", "1", "616000.000"]]
    renamed = sweep_plot.points_from_csv(sweep_plot.Args(csv=str(path), metric="solved_at", line_columns=columns, rename=[
        "agalite_gate_bias-3_learning_rate0.001=lr1e-3", "agalite_gate_bias-4_learning_rate0.001=lr1e-3"]))
    assert sorted((line, x, value) for (_, line), x, _, value in renamed if line == "lr1e-3") == [("lr1e-3", 200.0, 180000.0), ("lr1e-3", 400.0, 616000.0)]
    # --plain-values: a value that names no line, as an empty one: lr 0.001 rows join the lines without it
    plain = sweep_plot.points_from_csv(sweep_plot.Args(csv=str(path), metric="solved_at", line_columns=columns, plain_values=["learning_rate=0.001"]))
    assert sorted({line for (_, line), *_ in plain}) == ["agalite", "agalite_gate_bias-3", "agalite_gate_bias-4", "gtrxl"]
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        sweep_plot.points_from_csv(sweep_plot.Args(csv=str(path), metric="solved_at", line_columns=columns, plain_values=["adam_eps=1e-5"]))
    with pytest.raises(ValueError, match="lacks the column"):
        sweep_plot.main(sweep_plot.Args(csv=str(path), line_columns=["script", "forget_bias"], out=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="--show-unsolved"):
        sweep_plot.main(sweep_plot.Args(csv=str(path), metric="success", show_unsolved=True, out=str(tmp_path / "x")))


# ---------------------------------------------------------------- the sweep runner

STUB = '''"""Stands in for ppo_<script>.py: notes its call, writes a run as the scripts do, exits (3 with --fail)."""
import json, os, sys, time
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

argv = sys.argv[1:]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.txt"), "a") as f:
    f.write(json.dumps([os.path.basename(__file__)] + argv) + "\\n")
if "--fail" in argv:
    sys.exit(3)
get = lambda key: argv[argv.index(key) + 1]
writer = EventFileWriter(f"runs/{get('--env-id')}__{get('--exp-name')}__{get('--seed')}__{int(time.time())}")
for i in range(10):
    for tag, value in (("charts/success_rate", i / 10), ("charts/episodic_return", float(i))):
        writer.add_event(Event(wall_time=time.time(), step=100 * (i + 1), summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))
writer.close()
print("stub done")
'''


def test_sweep_runner_resumes(tmp_path):
    scripts, work = tmp_path / "scripts", tmp_path / "work"
    scripts.mkdir(), work.mkdir()
    for name in ("agalite", "lstm"):
        (scripts / f"ppo_{name}.py").write_text(STUB)

    def sweep(names, extra=(), grid=("env.corridor_length=10",), **kw):
        args = sweep_tool.Args(scripts=names, grid=list(grid), seeds=[1], total_timesteps=1000, jobs=2,
                                workdir=str(work), script_dir=str(scripts), python_cmd=sys.executable, poll_s=0.05, **kw)
        return sweep_tool.main(args, extra)

    def calls():
        return [json.loads(line) for line in (scripts / "calls.txt").read_text().splitlines()]

    # first: agalite alone runs and is marked finished
    assert sweep(["agalite"]) == {"ran": ["sweep_agalite_L10__1"], "skipped": [], "failed": []}
    assert (work / "runs" / "sweep_logs" / "sweep_agalite_L10__1.done").is_file()
    assert "stub done" in (work / "runs" / "sweep_logs" / "sweep_agalite_L10__1.log").read_text()

    # again with lstm added: only the unfinished lstm run is started
    assert sweep(["agalite", "lstm"]) == {"ran": ["sweep_lstm_L10__1"], "skipped": ["sweep_agalite_L10__1"], "failed": []}
    assert [c[0] for c in calls()] == ["ppo_agalite.py", "ppo_lstm.py"]
    last = calls()[-1]
    assert last[last.index("--exp-name") + 1] == "sweep_lstm_L10" and last[last.index("--env-kwargs") + 1] == '{"corridor_length": 10}'
    assert last[last.index("--total-timesteps") + 1] == "1000"

    with open(work / "runs" / "sweep_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["script"] for r in rows] == ["agalite", "lstm"]
    assert rows[1]["final_success"] == "0.9" and rows[1]["final_return"] == "9.0" and rows[1]["steps"] == "1000"
    assert rows[1]["run_dir"].startswith(os.path.join("runs", "TMaze-v0__sweep_lstm_L10__1__"))
    assert rows[1]["solved_at"] == "" and rows[1]["sps"] == ""  # success 0.0 .. 0.9: no 5 points average 0.9

    # the grid's rows are rewritten from its finished runs, here with "solved" = one point above 0.85 (0.9 at step
    # 1000); the other grid's row (agalite) stays
    assert sweep(["lstm"], solved_window=1, solved_threshold=0.85)["skipped"] == ["sweep_lstm_L10__1"]
    with open(work / "runs" / "sweep_summary.csv", newline="") as f:
        assert [(r["script"], r["solved_at"]) for r in csv.DictReader(f)] == [("agalite", ""), ("lstm", "1000")]

    # everything finished: nothing runs; other arguments for a finished run are refused before anything starts
    assert sweep(["agalite", "lstm"])["ran"] == []
    with pytest.raises(ValueError, match="other arguments"):
        sweep(["agalite", "lstm"], extra=["--num-envs", "8"])
    assert len(calls()) == 2

    # a failing run gets no marker, so it runs again next time
    assert sweep(["lstm"], extra=["--fail"], tag="bad")["failed"] == ["bad_lstm_L10__1"]
    assert not (work / "runs" / "bad_logs" / "bad_lstm_L10__1.done").exists()
    assert sweep(["lstm"], extra=["--fail"], tag="bad")["failed"] == ["bad_lstm_L10__1"]
    assert len(calls()) == 4

    with pytest.raises(ValueError, match="no ppo_<script>.py"):
        sweep(["galite"])

    # another grid of the same tag adds its rows and columns
    assert sweep(["lstm"], grid=["env.corridor_length=10", "ent_coef=0.0"])["ran"] == ["sweep_lstm_L10_ent_coef0.0__1"]
    with open(work / "runs" / "sweep_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["script"], r["corridor_length"], r["ent_coef"]) for r in rows] == [("agalite", "10", ""), ("lstm", "10", ""), ("lstm", "10", "0.0")]

    # a summary row whose run directory is gone is dropped
    shutil.rmtree(work / rows[2]["run_dir"])
    sweep(["lstm"])
    with open(work / "runs" / "sweep_summary.csv", newline="") as f:
        assert [r["script"] for r in csv.DictReader(f)] == ["agalite", "lstm"]
