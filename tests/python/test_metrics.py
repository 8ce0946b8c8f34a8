"""`moe train --metrics` at two ranks: every line is checked against what the run must
have done, a resumed run appends to the series, and scripts/plot-training.py draws it."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHASES = {"route", "plan", "pack", "dispatch", "experts", "send_back", "combine", "shared_expert", "reduce", "wait",
          "total"}
STEP_PARTS = ["draw", "label", "forward", "loss", "backward", "optimizer"]


def moe_train(tmp_path, *args):
    build = os.environ.get("MOE_BUILD_DIR", os.path.join(ROOT, "build"))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1")
    command = ["mpirun", "-np", "2", os.path.join(build, "bin", "moe"), "train", "--tokens", "64", "--hidden",
               "32", "--expert-dim", "48", "--experts", "8", "--top-k", "2", "--router", "sigmoid",
               "--expert-kind", "glu", "--log-every", "5", *args]
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_mpi_train_metrics_lines_are_what_the_run_did_and_plot(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    out = moe_train(tmp_path, "--steps", "20", "--metrics", str(metrics), "--ckpt", "ckpt.h5")
    assert "ms/step fwd: route" in out and "| bwd:" in out  # --log-every reports the phases
    assert "| wall: draw " in out  # and where the step's time goes on the host
    out = moe_train(tmp_path, "--steps", "30", "--metrics", str(metrics), "--resume", "ckpt.h5")
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20, 25, 30]  # the resumed run appended
    for r in lines:
        assert r["steps_in_window"] == 5
        for key in ("loss", "aux_loss", "z_loss", "tokens_per_s", "dropped_share", "lr"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r)
        assert r["loss"] > 0 and r["tokens_per_s"] > 0 and 0 <= r["dropped_share"] < 1
        chosen, kept = np.array(r["chosen_per_expert"]), np.array(r["kept_per_expert"])
        # global counts: 2 ranks x 64 tokens x top-2, over the window's 5 steps
        assert chosen.shape == (8,) and chosen.sum() == 5 * 2 * 64 * 2
        assert (kept <= chosen).all()
        assert math.isclose(r["dropped_share"], 1 - kept.sum() / chosen.sum(), rel_tol=1e-9, abs_tol=1e-12)
        # the mean over steps of each step's max/mean is at least the window's max/mean
        assert chosen.max() / chosen.mean() - 1e-9 <= r["load_max_over_mean"] <= 8
        assert len(r["expert_bias"]) == 8 and any(b != 0 for b in r["expert_bias"])
        for key in ("forward_ms", "backward_ms"):
            assert set(r[key]) == PHASES and r[key]["experts"] > 0 and r[key]["dispatch"] > 0
            assert math.isclose(r[key]["total"], sum(v for k, v in r[key].items() if k != "total"), rel_tol=1e-9)
        # The step's parts, each timed on the host: a stream labelled in the step (a CPU's
        # default) spends time in every one, and they are disjoint parts of the window.
        wall = r["wall_ms"]
        assert list(wall) == STEP_PARTS and all(wall[p] > 0 for p in STEP_PARTS), wall
        ms_per_step = 1e3 * 2 * 64 / r["tokens_per_s"]
        assert sum(wall.values()) <= ms_per_step * (1 + 1e-9), (wall, ms_per_step)
    assert lines[-1]["loss"] < lines[0]["loss"]

    plots = tmp_path / "plots"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot-training.py"), str(metrics),
                          str(plots)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    import matplotlib.image

    for name in ("loss.png", "expert-load.png", "throughput.png", "phases.png"):
        path = plots / name
        assert path.exists() and path.stat().st_size > 10_000, name
        pixels = matplotlib.image.imread(str(path))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400, name
        assert pixels[..., :3].std() > 0.05, f"{name} is blank"  # drawn, not an empty canvas


def test_mpi_train_refuses_a_metrics_file_that_is_the_checkpoint(tmp_path):
    build = os.environ.get("MOE_BUILD_DIR", os.path.join(ROOT, "build"))
    run = subprocess.run([os.path.join(build, "bin", "moe"), "train", "--steps", "1", "--ckpt", "same.h5",
                          "--metrics", "same.h5"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "--metrics 'same.h5' is also the checkpoint" in run.stderr
