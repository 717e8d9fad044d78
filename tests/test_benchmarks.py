"""The benchmark scripts run (on a tiny size); their timings are not tested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from adastudy.heads import HEAD_NAMES

ROOT = Path(__file__).resolve().parents[1]


def test_heads_benchmark_prints_every_ratio_on_a_tiny_size():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "heads.py"), "--classes", "40",
         "--batch", "8", "--dim", "16", "--repeats", "1", "--warmup", "0", "--markdown"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    for name in ("floor", *HEAD_NAMES, "pml:cosface", "pml:arcface", "pml:normface"):
        assert f"| {name} |" in out, name
    for target in ("cosface / floor", "arcface / floor", "adacos-dynamic / cosface",
                   "cosface / pml CosFaceLoss", "arcface / pml ArcFaceLoss"):
        assert f"| {target} |" in out, target
    assert "all targets met:" in out


def test_loop_benchmark_prints_its_ratio_on_a_tiny_size():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "loop.py"), "--tiny"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "bare loop" in out and "run_trial" in out
    assert "ratio trial / bare = " in out


def test_loop_benchmark_prints_a_ratio_for_each_head_it_is_given():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "loop.py"), "--tiny", "--head",
         "softmax,arcface"], capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "## softmax" in out and "## arcface" in out
    assert out.count("ratio trial / bare = ") == 2
    assert "| softmax |" in out and "| arcface |" in out


def test_the_fused_loss_benchmark_prints_both_ratios():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fused_loss.py"), "--tiny", "--head",
         "arcface"], capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    (row,) = [line for line in out.splitlines() if line.startswith("| arcface |")]
    assert row.count("(") == 2 and row.count("|") == 6


def test_loop_benchmark_runs_a_face_backbone_for_a_number_of_steps():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "loop.py"), "--model", "mobilefacenet",
         "--image-size", "112", "--steps", "4", "--batch", "10", "--identities", "10",
         "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "images (3, 112, 112), model mobilefacenet" in out
    assert "4 steps" in out and "ratio trial / bare = " in out


def test_gpu_check_refuses_a_python_without_cuda_in_one_line():
    import os

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: gpu_check.sh would run")
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"gpu_check: no CUDA GPU visible to {sys.executable} (torch {torch.__version__})"]
    assert done.stdout == ""


def test_the_sweep_scale_benchmark_prints_the_overhead_and_its_growth_on_tiny_sizes():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep_scale.py"), "--sizes", "8", "16",
         "--engines", "serial"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: the overhead grew (noise, here)
    assert "serial                       16 trials" in done.stdout
    assert "ms/trial at 8 trials" in done.stdout
    assert ("constant" in done.stdout) == (done.returncode == 0)


def test_the_data_benchmark_prints_both_loops_and_their_ratio_on_a_tiny_set():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data.py"), "--images", "64", "--size",
         "32", "--identities", "8", "--batch", "16", "--repeats", "1", "--workers", "0", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: the target was missed (noise, here)
    for workers in (0, 1):
        assert f"workers {workers}: adastudy " in done.stdout
    assert done.stdout.count("ratio adastudy / bare = ") == 2
    assert ("target >= 0.95: met" in done.stdout) == (done.returncode == 0)
