"""benchmarks/gpu_smoke.sh's command lines (no GPU needed): with a `python` on PATH that passes the script's CUDA
check and adds --help to every train_speed.py call, each env family's arguments must parse (a train_speed.py
call whose arguments do not parse exits with an error before it reaches --help)."""

import os
import stat
import subprocess
import sys

from conftest import ROOT


def test_every_family_command_line_parses(tmp_path):
    shim = tmp_path / "python"
    shim.write_text(f'#!/bin/sh\n[ "$1" = "-c" ] && exit 0\nexec {sys.executable} "$@" --help\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", COMPILE="off")
    out = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_smoke.sh")], env=env, capture_output=True,
                         text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "FAILED" not in text, text
    assert text.count("== ") == 5 and text.count("usage: benchmarks/train_speed.py") == 5, text
    assert text.count("usage: benchmarks/kernel_speed.py") == 1, text
