"""A training process killed with SIGKILL resumes to the result and the logs of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

from experiments import configs
from mie_jax.data.registry import load_dataset
from mie_jax.train import make_config, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = [
    "train.outer_iterations=3",
    "train.phase_epochs=1",
    "model.dim=16",
    "model.encoder_hidden=32",
    "train.batch_size=100",
]
FLAGS = [arg for value in OVERRIDES for arg in ("--set", value)]


def run_module(workdir, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "--workdir", str(workdir), *FLAGS, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def completed_steps(workdir):
    directory = workdir / "checkpoints"
    return sorted(int(p) for p in os.listdir(directory) if p.isdigit()) if directory.exists() else []


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_result(tmp_path):
    config = make_config(configs.get_config("mfeat"), OVERRIDES)
    uninterrupted = train(config, load_dataset("mfeat", config.modalities))
    expected = uninterrupted["test"]
    rng = random.Random(0)
    process = run_module(tmp_path)
    kills = 0
    # Kill twice: each time once a new checkpoint exists, after a random extra delay that may land
    # inside the next phase or inside the next save.
    while kills < 2:
        seen = completed_steps(tmp_path)
        if process.poll() is not None:
            break
        if len(seen) > kills:
            time.sleep(rng.uniform(0.0, 1.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            process = run_module(tmp_path, "--resume")
        time.sleep(0.05)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert kills >= 1, "the run finished before it could be killed"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test"] == expected
    # The logs too: rebuilt from each restored checkpoint's history, so no phase is lost or repeated.
    logged = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert logged == json.loads(json.dumps(uninterrupted["history"]))
    steps = (tmp_path / "steps.csv").read_text().splitlines()
    assert len(steps) == 1 + sum(len(r["step_losses"]) for r in uninterrupted["history"])
