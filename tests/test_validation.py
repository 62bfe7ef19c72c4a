"""A bad number stops every script with one line starting with `error:` that names the option, before anything is
built (issue 37), and envs/ refuses an environment keyword argument of the wrong type with the type it expects.

Most values go through each script's check_args in this process (milliseconds each); a few subprocesses prove the
command-line path: exit status 1, one `error:` line, no traceback, nothing written."""

import dataclasses
import importlib
import importlib.util
import json
import math
import subprocess
import sys
import typing

import numpy as np
import pytest

import envs
from test_scripts import SCRIPTS, SMALL, cli

# (option, a value it must refuse) for the PPO and run options all four scripts share
SHARED_BAD = [
    ("seed", -1), ("seed", 2**32), ("threads", -1), ("eval_episodes", 0), ("checkpoint_every", -1),
    ("stop_at_success", -0.1), ("stop_at_success", 2.0), ("total_timesteps", 0), ("learning_rate", -1.0),
    ("learning_rate", 0.0), ("adam_eps", 0.0), ("num_envs", 0), ("num_steps", 0), ("seq_len", -1), ("gamma", -0.01),
    ("gamma", 1.5), ("gae_lambda", 1.01), ("num_minibatches", 0), ("update_epochs", 0), ("clip_coef", 0.0),
    ("ent_coef", -0.01), ("vf_coef", -0.5), ("max_grad_norm", 0.0), ("target_kl", 0.0), ("head_hidden", -1),
    ("learning_rate", math.nan), ("max_grad_norm", math.inf), ("head_hidden_gain", 0.0), ("head_hidden_gain", -2.0),
]
# each script's memory-model sizes: all must be at least 1
MODEL_SIZES = {
    "ppo_agalite": ["n_layers", "d_model", "n_heads", "d_head", "d_ffc", "eta", "r"],
    "ppo_galite": ["n_layers", "d_model", "n_heads", "d_head", "d_ffc", "eta"],
    "ppo_gtrxl": ["n_layers", "d_model", "n_heads", "d_head", "d_ffc", "memory_len"],
    "ppo_lstm": ["d_model", "lstm_hidden"],
}
# numeric options any finite value of which is fine (init gains and biases), and the fields check_args fills
FREE = {"actor_gain", "critic_gain", "gru_bias", "gate_bias", "forget_bias", "batch_size", "minibatch_size", "num_iterations"}


def good_args(module, script):
    return module.Args(**SMALL[script], num_envs=2, num_minibatches=2)


def numeric_fields(module):
    hints = typing.get_type_hints(module.Args)
    return [f.name for f in dataclasses.fields(module.Args) if hints[f.name] in (int, float, typing.Optional[float])]


def refusal(module, args, **change):
    with pytest.raises(ValueError) as e:
        module.check_args(dataclasses.replace(args, **change))
    return str(e.value)


@pytest.mark.parametrize("script", SCRIPTS)
def test_check_args_refuses_every_bad_number_naming_its_option(script):
    module = importlib.import_module(script)
    args = good_args(module, script)
    bad = SHARED_BAD + [(name, 0) for name in MODEL_SIZES[script]]
    for name, value in bad:
        message = refusal(module, args, **{name: value})
        assert message.startswith(f"--{name.replace('_', '-')} ({value}) must be "), (name, value, message)
        assert "\n" not in message
    # every float option refuses nan and inf, the free ones included
    for name in numeric_fields(module):
        if typing.get_type_hints(module.Args)[name] is not int:
            for value in (math.nan, -math.inf):
                assert refusal(module, args, **{name: value}).startswith(f"--{name.replace('_', '-')} ({value}) must be a finite number")
    # every numeric option has a rule here, or is declared free: a new option cannot go unchecked unnoticed
    assert set(numeric_fields(module)) - FREE - {name for name, _ in bad} == set()
    # the heads' activation is a name: tanh or relu, nothing else
    for value in ("gelu", "Tanh", ""):
        assert refusal(module, args, head_activation=value) == f"--head-activation ({value}) must be one of tanh, relu"


@pytest.mark.parametrize("script", SCRIPTS)
def test_good_values_pass_check_args(script):
    module = importlib.import_module(script)
    module.check_args(module.Args())  # the defaults
    args = good_args(module, script)
    edges = {"seed": 0, "threads": 0, "checkpoint_every": 0, "stop_at_success": 1.0, "learning_rate": 1e-9, "adam_eps": 1e-8,
             "gamma": 1.0, "gae_lambda": 0.0, "ent_coef": 0.0, "vf_coef": 0.0, "target_kl": 0.01, "seq_len": 0,
             "head_hidden": 0, "actor_gain": -1.0, "critic_gain": 0.0, "head_activation": "relu", "head_hidden_gain": 1e-3}
    edges.update({name: -5.0 for name in ("gru_bias", "gate_bias", "forget_bias") if hasattr(args, name)})
    checked = module.check_args(dataclasses.replace(args, **edges))
    assert checked.seq_len == checked.num_steps and checked.num_iterations >= 1
    for name in MODEL_SIZES[script]:
        module.check_args(dataclasses.replace(args, **{name: 1}))


# the three examples and two more (a bad head activation is a name, not a number): a subprocess costs about a second
CLI_CASES = [
    ("ppo_agalite", "learning_rate", "-1"), ("ppo_galite", "num_envs", "0"),
    ("ppo_gtrxl", "stop_at_success", "2"), ("ppo_lstm", "seed", "-1"), ("ppo_agalite", "head_activation", "gelu"),
]


@pytest.mark.parametrize("script, name, value", CLI_CASES)
def test_command_line_prints_one_error_line_before_building_anything(script, name, value, tmp_path):
    result = subprocess.run(cli(script, **{name: value}), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: --{name.replace('_', '-')} ("), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # stopped before the TensorBoard log was made


# --- environment keyword arguments -------------------------------------------------------------------------------

ENV_BAD = [
    ("TMaze-v0", {"corridor_length": "abc"}, "TMaze-v0: corridor_length must be an integer (int), got 'abc' (str)"),
    ("TMaze-v0", {"corridor_length": 2.5}, "corridor_length must be an integer (int), got 2.5 (float)"),
    ("TMaze-v0", {"corridor_length": 0}, "choose 1 <= corridor_length"),
    ("TMaze-v0", {"n_distractors": True}, "n_distractors must be an integer (int), got True (bool)"),
    ("TMaze-v0", {"max_episode_steps": "abc"}, "max_episode_steps must be an integer (int), got 'abc' (str)"),
    ("TMazePassive-v0", {"carried": "yes"}, "carried must be true or false (bool), got 'yes' (str)"),
    ("TMazePassive-v0", {"max_episode_steps": 1.5}, "max_episode_steps must be an integer (int), got 1.5 (float)"),
    ("MemoryMaze-9x9-v0", {"camera_resolution": "big"}, "MemoryMaze-9x9-v0: camera_resolution must be an integer (int), got 'big' (str)"),
    ("MemoryMaze-9x9-v0", {"good_visibility": 1}, "good_visibility must be true or false (bool), got 1 (int)"),
    ("MemoryMaze-9x9-v0", {"bogus": 1}, "unknown task arguments ['bogus']"),
    ("Craftax-Classic-Symbolic-v1", {"max_episode_steps": "abc"}, "max_episode_steps must be an integer (int), got 'abc' (str)"),
    ("Craftax-Classic-Symbolic-v1", {"reset_pool_size": 1.5}, "reset_pool_size must be an integer (int), got 1.5 (float)"),
]  # (Memory Maze and Craftax check before importing their packages: these run without them)


@pytest.mark.parametrize("env_id, kwargs, message", ENV_BAD, ids=[f"{e}-{next(iter(k))}" for e, k, _ in ENV_BAD])
def test_env_kwargs_of_the_wrong_type_are_refused_with_the_type(env_id, kwargs, message):
    with pytest.raises(ValueError) as e:
        envs.make_envs(env_id, 2, 0, json.dumps(kwargs))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("memory_gym") is None, reason="memory-gym not installed")
def test_memory_gym_reset_options_take_their_defaults_types():
    for options, message in [
        ({"max_steps": "abc"}, "MysteryPath-Grid-v0: reset_options max_steps must be an integer (int), got 'abc' (str)"),
        ({"show_goal": 1}, "reset_options show_goal must be true or false (bool), got 1 (int)"),
        ({"cardinal_origin_choice": [0, "a"]}, "reset_options cardinal_origin_choice entries must be an integer (int), got 'a'"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            envs.make_envs("MysteryPath-Grid-v0", 1, 0, json.dumps({"reset_options": options}))
    with pytest.raises(ValueError, match=r"flatten_actions must be true or false \(bool\)"):
        envs.make_envs("MysteryPath-Grid-Easy-v0", 1, 0, '{"flatten_actions": "yes"}')
    vec = envs.make_envs("MysteryPath-Grid-v0", 1, 0, '{"reset_options": {"max_steps": 6, "agent_scale": 1}}')  # an int is a number
    vec.close()


def test_tmaze_max_episode_steps_is_the_envs_own_limit():
    """gym.make would take max_episode_steps for a TimeLimit whose time-outs carry no success flag (then left out of
    the success rate): make_envs hands it to TMaze-v0, whose time-outs report success False."""
    vec = envs.make_envs("TMaze-v0", 1, 0, '{"max_episode_steps": 3}')
    vec.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, infos = vec.step(np.array([2]))  # left: never reaches the junction
    assert truncated[0] and not terminated[0]
    assert infos["final_info"][0]["success"] is False and infos["final_info"][0]["episode"]["l"][0] == 3
    vec.close()


def test_command_line_env_kwarg_error_is_one_line(tmp_path):
    cmd = cli("ppo_lstm", num_envs=2, num_minibatches=2, env_kwargs=json.dumps({"corridor_length": "abc"}))
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: TMaze-v0: corridor_length must be an integer (int), got 'abc' (str)"


def test_the_scripts_share_their_checks():
    """check_args is the same in all four scripts but for the line that names the model's sizes."""
    bodies = []
    for script in SCRIPTS:
        source = importlib.util.find_spec(script).loader.get_source(script)
        body = source[source.index("def check_args(args):"):source.index("    return args\n", source.index("def check_args(args):"))]
        bodies.append([line for line in body.splitlines() if "the memory model's sizes" not in line])
    assert all(body == bodies[0] for body in bodies)
