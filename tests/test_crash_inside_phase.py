"""A training process killed with SIGKILL inside a phase resumes from the checkpoint written inside it."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from experiments import configs
from mie_jax.data.registry import load_dataset
from mie_jax.train import make_config, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# mfeat's 1200 training rows in batches of 100: 12 steps a phase, phases end at steps 12, 24 and 36.
# Chunks of 2 steps, a checkpoint every 4: checkpoints inside phases at 4, 8, 16, 20, 28, 32.
OVERRIDES = [
    "train.outer_iterations=3",
    "train.phase_epochs=1",
    "model.dim=16",
    "model.encoder_hidden=32",
    "train.batch_size=100",
    "train.chunk_steps=2",
    "train.checkpoint_every_steps=4",
    "modalities=fac,mor",
]
STEPS_PER_PHASE = 12


def run_module(workdir, *extra):
    flags = [arg for value in OVERRIDES for arg in ("--set", value)]
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "--workdir", str(workdir), "--quiet", *flags, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def checkpoint_steps(workdir):
    directory = workdir / "checkpoints"
    return sorted(int(p) for p in os.listdir(directory) if p.isdigit()) if directory.exists() else []


def test_sigkill_inside_a_phase_resumes_there_to_the_uninterrupted_result(tmp_path):
    config = make_config(configs.get_config("mfeat"), OVERRIDES)
    uninterrupted = train(config, load_dataset("mfeat", config.modalities), quiet=True)
    process = run_module(tmp_path)
    deadline = time.monotonic() + 600
    # Kill as soon as a checkpoint inside the second phase exists, before that phase ends.
    while not any(STEPS_PER_PHASE < s < 2 * STEPS_PER_PHASE for s in checkpoint_steps(tmp_path)):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint inside the second phase in 10 minutes"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(checkpoint_steps(tmp_path))
    resumed = run_module(tmp_path, "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    # The resumed run's first progress line is its first chunk after the checkpoint: inside the phase.
    phase, step = divmod(killed_at, STEPS_PER_PHASE)
    first = next(line for line in output.splitlines() if re.match(r"phase \d+/\d+ \(\w+\): step", line))
    assert first.startswith(f"phase {phase + 1}/6 ({('fac', 'mor')[phase % 2]}): step {step + 2}/{STEPS_PER_PHASE} ")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test"] == uninterrupted["test"]
    logged = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert [r["step_losses"] for r in logged] == [r["step_losses"] for r in uninterrupted["history"]]
