"""Long runs survive interruption: --checkpoint-every writes a checkpoint atomically, --resume continues a killed
run to its requested steps with every TensorBoard step logged once, mismatched resumptions fail clearly, and a
non-finite loss stops the run without touching the last checkpoint."""

import dataclasses
import glob
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT
from test_scripts import SCRIPTS, SMALL, cli

NUM_ENVS, NUM_STEPS = 4, 16  # one iteration = 64 steps
TINY = dict(num_envs=NUM_ENVS, num_steps=NUM_STEPS, num_minibatches=2, update_epochs=1, cuda=False,
            env_kwargs=json.dumps({"corridor_length": 2}))


def read_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def scalars(run_dir, tag):
    events = EventAccumulator(run_dir)  # hides what a resumed run purged (the steps logged after its checkpoint)
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def wait_for_checkpoint(proc, pattern, min_iteration, timeout=240):
    """Polls until a checkpoint of at least `min_iteration` exists; returns its path (None if the run ended first)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for path in glob.glob(pattern):
            try:
                if read_checkpoint(path)["iteration"] >= min_iteration:
                    return path
            except (OSError, EOFError, RuntimeError):
                pass  # (cannot happen with the atomic rename, but a poll must not fail the test for it)
        time.sleep(0.02)
    return None


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_killed_run_resumes_to_its_last_step_with_every_step_logged_once(script, tmp_path):
    iterations = 40
    args = dict(TINY, total_timesteps=iterations * NUM_ENVS * NUM_STEPS, checkpoint_every=2)
    proc = subprocess.Popen(cli(script, **args), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    path = wait_for_checkpoint(proc, str(tmp_path / "runs" / f"TMaze-v0__{script}__1__*" / "checkpoint.pt"), min_iteration=4)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert path is not None and proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr}"
    killed_at = read_checkpoint(path)["iteration"]
    assert killed_at < iterations and not glob.glob(path + ".tmp")
    run_dir = os.path.dirname(path)

    result = subprocess.run(cli(script, **args, resume=run_dir), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert glob.glob(str(tmp_path / "runs" / "*")) == [run_dir]  # the same run directory, no new one
    assert read_checkpoint(path)["iteration"] == iterations
    assert read_checkpoint(path)["global_step"] == iterations * NUM_ENVS * NUM_STEPS
    # every iteration logged exactly once, in order, and the annealed learning rate continues where it was
    steps_and_lr = scalars(run_dir, "charts/learning_rate")
    assert [step for step, _ in steps_and_lr] == [i * NUM_ENVS * NUM_STEPS for i in range(1, iterations + 1)]
    expected_lr = [2.5e-4 * (1 - (i - 1) / iterations) for i in range(1, iterations + 1)]
    assert [lr for _, lr in steps_and_lr] == pytest.approx(expected_lr, rel=1e-5)


def sigterm_after_first_update(cmd, cwd):
    """Starts `cmd`, sends SIGTERM once it prints its first progress line (its loop and handler have started);
    returns (returncode, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, proc.kill)  # a run that never prints a progress line fails the test, not hangs it
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_sigterm_finishes_the_update_checkpoints_and_exits_143_then_the_run_resumes(script, tmp_path):
    """SIGTERM (SLURM's preemption) mid-run: the run checkpoints at once (checkpoint_every is larger than the run) and
    exits with 128 + 15; resumed, it finishes with every step logged once."""
    iterations = 60
    args = dict(TINY, total_timesteps=iterations * NUM_ENVS * NUM_STEPS, checkpoint_every=1000)
    returncode, stdout, stderr = sigterm_after_first_update(cli(script, **args), tmp_path)
    assert returncode == 143, stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    stopped_at = read_checkpoint(path)["iteration"]
    assert 1 <= stopped_at < iterations and f"SIGTERM: stopping at step {stopped_at * NUM_ENVS * NUM_STEPS} (checkpoint written" in stdout

    run_dir = os.path.dirname(path)
    result = subprocess.run(cli(script, **args, resume=run_dir), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert read_checkpoint(path)["iteration"] == iterations
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [i * NUM_ENVS * NUM_STEPS for i in range(1, iterations + 1)]


def test_sigterm_stops_a_mystery_path_run_whose_pygame_would_ignore_it(tmp_path):
    """memory-gym's pygame (SDL) catches SIGTERM and does nothing with it; the script's own handler, set after the
    environments are made, still stops the run after its update (no --checkpoint-every: nothing saved)."""
    pytest.importorskip("memory_gym", reason="memory-gym not installed (pip install memory-gym==1.0.2)")
    args = dict(num_envs=2, num_steps=16, num_minibatches=1, update_epochs=1, cuda=False, n_layers=1, total_timesteps=100 * 32)
    returncode, stdout, stderr = sigterm_after_first_update(cli("ppo_agalite", env_id="MysteryPath-Grid-Easy-v0", **args), tmp_path)
    assert returncode == 143, stderr
    assert "(no --checkpoint-every)" in stdout and not glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))


def test_a_run_resumed_from_a_checkpoint_older_than_its_log_logs_each_step_once(tmp_path):
    """What a kill leaves when the log got further than the checkpoint: made here by rewinding a finished run's
    checkpoint by two iterations. The resumed run logs those iterations again; TensorBoard must show them once."""
    iterations = 4
    args = dict(TINY, total_timesteps=iterations * NUM_ENVS * NUM_STEPS, checkpoint_every=1)
    result = subprocess.run(cli("ppo_lstm", **args), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    checkpoint = read_checkpoint(path)
    checkpoint["iteration"] -= 2
    checkpoint["global_step"] -= 2 * NUM_ENVS * NUM_STEPS
    torch.save(checkpoint, path)
    result = subprocess.run(cli("ppo_lstm", **args, resume=os.path.dirname(path)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(glob.glob(os.path.join(os.path.dirname(path), "events.out.tfevents.*"))) == 2  # both runs' logs are there
    steps = [step for step, _ in scalars(os.path.dirname(path), "charts/SPS")]
    assert steps == [i * NUM_ENVS * NUM_STEPS for i in range(1, iterations + 1)]


def test_resuming_with_other_arguments_another_script_or_no_checkpoint_fails_clearly(tmp_path):
    args = dict(TINY, total_timesteps=2 * NUM_ENVS * NUM_STEPS, checkpoint_every=1)
    result = subprocess.run(cli("ppo_lstm", **args), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    for cmd, message in [
        (cli("ppo_lstm", **dict(args, lstm_hidden=32), resume=run_dir), "--lstm-hidden 24 (this command: 32)"),
        (cli("ppo_lstm", **dict(args, seed=2), resume=run_dir), "--seed 1 (this command: 2)"),
        (cli("ppo_gtrxl", **args, resume=run_dir), "written by ppo_lstm.py, not ppo_gtrxl.py"),
        (cli("ppo_lstm", **args, resume=str(tmp_path / "runs" / "nothing")), "there is no"),
    ]:
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    # options about where and how a run goes may change on resumption (here --threads and --checkpoint-every)
    result = subprocess.run(cli("ppo_lstm", **dict(args, threads=2, checkpoint_every=5), resume=run_dir), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_older_than_an_option_compares_it_at_its_default(script, tmp_path):
    """A checkpoint written before an option existed (here the heads' --head-activation and --head-hidden-gain) ran
    with the option's default: it resumes with the default and is refused with another value."""
    module = importlib.import_module(script)
    args = module.check_args(module.Args(**SMALL[script], num_envs=2, num_minibatches=2))
    saved = {k: v for k, v in vars(args).items() if k not in ("head_activation", "head_hidden_gain")}
    torch.save({"script": f"{script}.py", "args": saved}, tmp_path / "checkpoint.pt")
    assert module.load_checkpoint(str(tmp_path), args)["args"] == saved
    for change, message in [({"head_activation": "relu"}, "--head-activation tanh (this command: relu)"),
                            ({"head_hidden_gain": 2.0}, "--head-hidden-gain 1.4142135623730951 (this command: 2.0)")]:
        with pytest.raises(ValueError, match="the run was started with other arguments") as e:
            module.load_checkpoint(str(tmp_path), dataclasses.replace(args, **change))
        assert message in str(e.value)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_of_a_gpu_run_with_cuda_graphs_resumes_on_a_cpu(script, tmp_path):
    """A GPU run compiled with CUDA graphs steps a capturable Adam, and its checkpoint says so; a CPU cannot step
    one. Made here from a CPU run's checkpoint (rewound by an iteration, marked capturable as a GPU run's is)."""
    iterations = 2
    args = dict(TINY, total_timesteps=iterations * NUM_ENVS * NUM_STEPS, checkpoint_every=1)
    result = subprocess.run(cli(script, **args), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    checkpoint = read_checkpoint(path)
    checkpoint["iteration"] -= 1
    checkpoint["global_step"] -= NUM_ENVS * NUM_STEPS
    for group in checkpoint["optimizer"]["param_groups"]:
        group["capturable"] = True
    torch.save(checkpoint, path)
    result = subprocess.run(cli(script, **args, resume=os.path.dirname(path)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert read_checkpoint(path)["global_step"] == iterations * NUM_ENVS * NUM_STEPS
    assert not any(group["capturable"] for group in read_checkpoint(path)["optimizer"]["param_groups"])


NAN_DRIVER = """
import os, runpy, sys
import gymnasium as gym
sys.path.insert(0, {root!r})
import envs


class NanRewardAfter(gym.Wrapper):
    # T-Maze whose rewards turn to NaN after `after` steps (of this env, across episodes)
    def __init__(self, env, after):
        super().__init__(env)
        self.after, self.steps = after, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, float("nan") if self.steps > self.after else reward, terminated, truncated, info


gym.register("NanRewardTMaze-v0", entry_point=lambda **kwargs: NanRewardAfter(envs.make_env("TMaze-v0", **kwargs), {after}))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script", ["ppo_agalite", "ppo_lstm"])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(script, tmp_path):
    driver = tmp_path / "nan_driver.py"
    driver.write_text(textwrap.dedent(NAN_DRIVER.format(root=ROOT, after=3 * NUM_STEPS)))  # iteration 4 gets NaN rewards
    args = dict(TINY, env_id="NanRewardTMaze-v0", total_timesteps=8 * NUM_ENVS * NUM_STEPS, checkpoint_every=1)
    result = subprocess.run([sys.executable, str(driver)] + cli(script, **args)[1:], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "the loss is nan at iteration 4 (step 256)" in result.stderr
    assert "Traceback" not in result.stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    checkpoint = read_checkpoint(path)
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert [step for step, _ in scalars(os.path.dirname(path), "losses/value_loss")] == [64, 128, 192]


# ---------------------------------------------------------------- sweeps that resume (benchmarks/sweep.py)

SWEEP = os.path.join(ROOT, "benchmarks", "sweep.py")
TINY_LSTM = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1", "--no-cuda",
             "--d-model", "16", "--lstm-hidden", "24"]


def script_pids(workdir, seed):
    """PIDs of the ppo_lstm.py processes of `seed` running in `workdir` (read from /proc: Linux)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().decode().split("\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except (OSError, ValueError):
            continue
        if cwd == str(workdir) and any(a.endswith("ppo_lstm.py") for a in argv) and argv[argv.index("--seed") + 1] == str(seed):
            pids.append(int(entry))
    return pids


def test_a_sweep_with_a_killed_run_completes_when_launched_again(tmp_path):
    iterations = 30
    cmd = [sys.executable, SWEEP, "--scripts", "lstm", "--grid", "env.corridor_length=2", "--seeds", "1", "2",
           "--total-timesteps", str(iterations * NUM_ENVS * NUM_STEPS), "--checkpoint-every", "2", "--jobs", "2",
           "--workdir", str(tmp_path), "--poll-s", "0.05", "--"] + TINY_LSTM
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pattern = str(tmp_path / "runs" / "TMaze-v0__sweep_lstm_L2__1__*" / "checkpoint.pt")
    deadline = time.time() + 240
    while not (path := wait_for_checkpoint(sweep, pattern, min_iteration=4, timeout=1)) and time.time() < deadline:
        pass
    assert path is not None, "seed 1 wrote no checkpoint"
    (pid,) = script_pids(tmp_path, seed=1)
    os.kill(pid, signal.SIGKILL)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 1 and "FAILED sweep_lstm_L2__1 (exit status -9)" in output, output
    assert read_checkpoint(path)["iteration"] < iterations

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 finished already, 1 to run" in again.stdout and "resumed from runs/TMaze-v0__sweep_lstm_L2__1__" in again.stdout
    for seed in (1, 2):
        (run_dir,) = glob.glob(str(tmp_path / "runs" / f"TMaze-v0__sweep_lstm_L2__{seed}__*"))  # one directory per run
        marker = json.load(open(tmp_path / "runs" / "sweep_logs" / f"sweep_lstm_L2__{seed}.done"))
        assert marker["run_dir"] == os.path.relpath(run_dir, tmp_path) and marker["resumed"] == (seed == 1)
        assert read_checkpoint(os.path.join(run_dir, "checkpoint.pt"))["iteration"] == iterations
        steps = [step for step, _ in scalars(run_dir, "charts/SPS")]
        assert steps == [i * NUM_ENVS * NUM_STEPS for i in range(1, iterations + 1)]  # every step reached exactly once
    with open(tmp_path / "runs" / "sweep_summary.csv") as f:
        assert [line.split(",")[:3] for line in f.read().splitlines()] == [["script", "corridor_length", "seed"], ["lstm", "2", "1"], ["lstm", "2", "2"]]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stopped_sweep_has_its_runs_checkpoint_after_their_update_and_completes_when_launched_again(how, tmp_path):
    """Ctrl-C in a terminal (SIGINT to the sweep's whole process group) or SIGTERM to the sweep: its run gets SIGTERM,
    finishes its update, checkpoints and exits; the sweep waits for it; launched again it resumes from there."""
    iterations = 60
    cmd = [sys.executable, SWEEP, "--scripts", "lstm", "--grid", "env.corridor_length=2", "--seeds", "1",
           "--total-timesteps", str(iterations * NUM_ENVS * NUM_STEPS), "--checkpoint-every", "1000", "--jobs", "1",
           "--workdir", str(tmp_path), "--poll-s", "0.05", "--"] + TINY_LSTM
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log = tmp_path / "runs" / "sweep_logs" / "sweep_lstm_L2__1.log"
    deadline = time.time() + 240
    while not (log.exists() and "\nstep " in log.read_text()) and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.02)
    assert sweep.poll() is None, "the sweep ended before it could be stopped"
    if how == "ctrl-c":
        os.killpg(sweep.pid, signal.SIGINT)  # what a terminal does: the sweep's group, which the run is not in
    else:
        sweep.send_signal(signal.SIGTERM)
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 1 and "stopping: SIGTERM to the 1 runs in progress" in output and "interrupted" in output, output
    assert not script_pids(tmp_path, seed=1) and "SIGTERM: stopping at step" in log.read_text(), log.read_text()
    (path,) = glob.glob(str(tmp_path / "runs" / "TMaze-v0__sweep_lstm_L2__1__*" / "checkpoint.pt"))
    assert 1 <= read_checkpoint(path)["iteration"] < iterations  # written on SIGTERM: the periodic one never comes

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resumed from runs/TMaze-v0__sweep_lstm_L2__1__" in again.stdout, again.stdout + again.stderr
    assert read_checkpoint(path)["iteration"] == iterations
    assert [step for step, _ in scalars(os.path.dirname(path), "charts/SPS")] == [i * NUM_ENVS * NUM_STEPS for i in range(1, iterations + 1)]


def test_the_slurm_path_runs_through_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit")
    cmd = [sys.executable, SWEEP, "--launcher", "submitit-local", "--scripts", "lstm", "--grid", "env.corridor_length=2",
           "--seeds", "3", "--total-timesteps", str(2 * NUM_ENVS * NUM_STEPS), "--checkpoint-every", "1",
           "--workdir", str(tmp_path), "--"] + TINY_LSTM
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 1 jobs" in result.stdout
    marker = json.load(open(tmp_path / "runs" / "sweep_logs" / "sweep_lstm_L2__3.done"))
    assert read_checkpoint(os.path.join(tmp_path, marker["run_dir"], "checkpoint.pt"))["iteration"] == 2
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "1 finished already, 0 to run" in again.stdout and again.returncode == 0


def test_stop_at_success_ends_the_run_after_five_good_updates(tmp_path):
    """On a 2-cell corridor a random policy already succeeds about half the time: with --stop-at-success 0.1 the
    run stops after its 5th update (the first with 5 updates to average), with a last checkpoint."""
    args = dict(TINY, total_timesteps=20 * NUM_ENVS * NUM_STEPS, checkpoint_every=100, stop_at_success=0.1)
    result = subprocess.run(cli("ppo_lstm", **args), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "stopping at step 320" in result.stdout
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    assert read_checkpoint(path)["iteration"] == 5
    assert [step for step, _ in scalars(os.path.dirname(path), "charts/SPS")][-1] == 5 * NUM_ENVS * NUM_STEPS


def test_slurm_options_become_the_sbatch_options():
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from conftest import load

    sweep_tool = load("benchmarks/sweep.py", "sweep_tool_slurm")
    args = sweep_tool.Args(launcher="slurm", jobs=16, tag="tmaze", slurm_partition="gpu", slurm_time_min=720, slurm_cpus=2,
                           slurm_gpus=1, slurm_mem_gb=16, slurm_extra=["account=proj"])
    script = _make_sbatch_string(command="python job", folder="/tmp/sweep_test/%j", map_count=40, **sweep_tool.slurm_parameters(args))
    for line in ["--array=0-39%16", "--partition=gpu", "--time=720", "--cpus-per-task=2", "--gpus-per-node=1", "--mem=16G",
                 "--job-name=tmaze", "--account=proj"]:
        assert f"#SBATCH {line}\n" in script, (line, script)


def test_sweep_grid_values_are_json_where_they_can_be():
    from conftest import load

    sweep_tool = load("benchmarks/sweep.py", "sweep_tool_grid")
    assert sweep_tool.parse_grid(["env.corridor_length=50,800", "env.carried=true,false", "ent_coef=1e-3", "x=abc"]) == [
        ("env.corridor_length", [50, 800]), ("env.carried", [True, False]), ("ent_coef", [0.001]), ("x", ["abc"])]


def test_a_sweep_stopped_midway_keeps_the_summary_rows_of_its_finished_runs(tmp_path):
    """The summary is written after every finished run, not only at the end: a sweep killed while its second run
    trains has the first run's row (and another invocation's rows of the same tag stay)."""
    summary = tmp_path / "runs" / "sweep_summary.csv"
    summary.parent.mkdir(parents=True)
    run_dir = tmp_path / "runs" / "other_run"
    run_dir.mkdir()
    summary.write_text("script,corridor_length,seed,final_success,final_return,solved_at,sps,steps,wall_time_s,run_dir\n"
                       "lstm,9,1,0.5,-1.0,,1,10,1.0,runs/other_run\n")
    cmd = [sys.executable, SWEEP, "--scripts", "lstm", "--grid", "env.corridor_length=2", "--seeds", "1", "2",
           "--total-timesteps", str(4 * NUM_ENVS * NUM_STEPS), "--checkpoint-every", "2", "--jobs", "1",
           "--workdir", str(tmp_path), "--poll-s", "0.05", "--"] + TINY_LSTM
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not script_pids(tmp_path, seed=2) and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.05)
    assert script_pids(tmp_path, seed=2), "the second run never started"
    sweep.kill()  # the sweep dies before its end-of-sweep summary
    sweep.communicate(timeout=60)
    for pid in script_pids(tmp_path, seed=2):
        os.kill(pid, signal.SIGKILL)
    with open(summary) as f:
        rows = [line.split(",")[:3] for line in f.read().splitlines()]
    assert rows == [["script", "corridor_length", "seed"], ["lstm", "9", "1"], ["lstm", "2", "1"]]
