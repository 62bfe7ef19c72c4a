"""benchmarks/paper_settings.py: every sweep command it prints gives each script arguments that parse, and those carry
the authors' release's Mystery Path and Craftax settings, written out here from its configs (config/mysterypath/*.yaml
with src/agents/ppo.py; config_pure/craftax/*.yaml with src_pure/purejaxrl/ppo_rnn.py), so that the one definition
cannot drift. Nothing is run: the commands are parsed as sweep.py and the scripts' tyro would parse them."""

import dataclasses
import importlib
import math
import shlex
import subprocess
import sys

import pytest
import tyro

from conftest import ROOT, load

paper_settings = load("benchmarks/paper_settings.py", "paper_settings")
sweep = load("benchmarks/sweep.py", "sweep")

# the release's values, as our Args fields (heads: hidden units, activation, hidden gain, actor gain, critic gain)
RELEASE = {
    "mysterypath": dict(
        num_envs=128, num_steps=128, seq_len=128, update_epochs=3, num_minibatches=8, clip_coef=0.2, norm_adv=True,
        clip_vloss=False, vf_coef=0.5, ent_coef=3e-4, learning_rate=2.5e-4, anneal_lr=False, max_grad_norm=5.0,
        adam_eps=1e-8, gamma=0.99, gae_lambda=0.95, bootstrap_timeouts=False,
        head_hidden=256, head_activation="tanh", head_hidden_gain=math.sqrt(2), actor_gain=1.414, critic_gain=1.414),
    "craftax": dict(
        num_envs=1024, num_steps=128, seq_len=128, update_epochs=4, num_minibatches=8, clip_coef=0.2, norm_adv=True,
        clip_vloss=True, vf_coef=0.5, ent_coef=0.01, learning_rate=4e-4, anneal_lr=True, max_grad_norm=1.0,
        adam_eps=1e-5, gamma=0.99, gae_lambda=0.8, bootstrap_timeouts=False,
        head_hidden=128, head_activation="relu", head_hidden_gain=2.0, actor_gain=0.01, critic_gain=1.0),
}
MODEL = {
    "mysterypath": {
        "agalite": dict(n_layers=4, d_model=128, d_head=64, d_ffc=128, n_heads=4, eta=4, r=2),
        "gtrxl": dict(n_layers=4, d_model=128, d_head=64, n_heads=4, memory_len=128, gru_bias=2.0),
        "lstm": dict(lstm_hidden=600),
    },
    "craftax": {
        "agalite": dict(n_layers=4, d_model=128, d_head=64, d_ffc=128, n_heads=4, eta=8, r=2),
        "gtrxl": dict(n_layers=4, d_model=128, d_head=64, n_heads=4, memory_len=128),
        "lstm": dict(lstm_hidden=600),
    },
}
ENV_ID = {"mysterypath": "MysteryPath-Grid-Easy-v0", "craftax": "Craftax-Symbolic-v1"}
HERE_ENVS = {"mysterypath": 32, "craftax": 64}  # what the 2-core machine changes: fewer envs, nothing else


def printed(*options):
    result = subprocess.run([sys.executable, "benchmarks/paper_settings.py", "--print-commands", *options], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def script_args(command):
    """The (script, parsed Args) of every run a printed sweep command makes, as sweep.py would start them."""
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "benchmarks/sweep.py"], command
    at = tokens.index("--")
    args = tyro.cli(sweep.Args, args=tokens[2:at])
    runs = sweep.plan(args, tokens[at + 1:])
    assert runs and {run["seed"] for run in runs} == {1, 2}
    parsed = []
    for run in runs:
        module = importlib.import_module(f"ppo_{run['script']}")
        parsed.append((run["script"], module.check_args(tyro.cli(module.Args, args=run["args"])), args))
    return parsed


@pytest.mark.parametrize("release", [True, False], ids=["release", "here"])
@pytest.mark.parametrize("family", ["mysterypath", "craftax"])
def test_printed_commands_parse_and_carry_the_release_settings(family, release):
    commands = printed("--family", family, *(["--release"] if release else []))
    assert len(commands) == 3  # agalite, gtrxl, lstm
    seen = set()
    for command in commands:
        for script, args, sweep_args in script_args(command):
            seen.add(script)
            expected = dict(RELEASE[family], **MODEL[family][script], env_id=ENV_ID[family])
            if not release:
                expected["num_envs"] = HERE_ENVS[family]
            for key, value in expected.items():
                got = getattr(args, key)
                assert (got == pytest.approx(value, rel=1e-12)) if isinstance(value, float) else got == value, (script, key, got, value)
            assert args.total_timesteps == paper_settings.BUDGET[family] and args.checkpoint_every == paper_settings.CHECKPOINT_EVERY[family]
            assert args.exp_name == f"{family}_{'release' if release else 'here'}_{script}" and sweep_args.jobs == 1
            # the minibatches are whole 128-step sequences: 8 of them per epoch, each of num_envs / 8 sequences
            assert args.num_envs * args.num_steps // args.seq_len % args.num_minibatches == 0
    assert seen == {"agalite", "gtrxl", "lstm"}


def test_here_changes_only_the_number_of_envs():
    for family in paper_settings.FAMILIES:
        for script in paper_settings.SCRIPTS:
            module = importlib.import_module(f"ppo_{script}")
            release, here = (dataclasses.asdict(tyro.cli(module.Args, args=shlex.split(paper_settings.flags(family, script, r))))
                             for r in (True, False))
            assert {k for k in release if release[k] != here[k]} == {"num_envs"}, (family, script)


def test_options_budget_seeds_env_and_a_bad_family():
    (command,) = printed("--family", "craftax", "--scripts", "gtrxl", "--budget", "1000000", "--seeds", "1", "2",
                         "--env-id", "Craftax-Classic-Symbolic-v1")
    ((script, args, _), _) = script_args(command)
    assert script == "gtrxl" and args.total_timesteps == 1_000_000 and args.env_id == "Craftax-Classic-Symbolic-v1"
    result = subprocess.run([sys.executable, "benchmarks/paper_settings.py", "--family", "atari"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: --family must be one of")


def test_cpu_hours():
    assert paper_settings.cpu_hours(sps=100, steps=3_600_000, runs=6) == pytest.approx(60.0)
