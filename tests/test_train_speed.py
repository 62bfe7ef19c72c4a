"""benchmarks/train_speed.py (which benchmarks/gpu_smoke.sh runs per env family): a quick run reports its steady
SPS and the device the script says it trained on."""

import csv

from conftest import load


def test_quick_run_reports_sps_and_the_device_used(tmp_path):
    train_speed = load("benchmarks/train_speed.py", "train_speed")
    train_speed.main(train_speed.Args(scripts=["lstm"], quick=True, out=str(tmp_path / "ts")))
    with open(tmp_path / "ts.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["device_used"] == "cpu" and row["updates"] == "3" and float(row["steady_sps"]) > 0
