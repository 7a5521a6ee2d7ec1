"""Data parallelism: 1 and 8 (simulated CPU) devices train the same model."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mie_jax.train import make_config, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs():
    # MIE exercises everything that crosses devices: SAM's global norm, the covariance, the all-reduce.
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or ""}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.multidevice_run", "mie"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def assert_same_run(a, b):
    for losses_a, losses_b in zip(a["step_losses"], b["step_losses"]):
        np.testing.assert_allclose(losses_a, losses_b, rtol=2e-4, atol=1e-5)
    for name in a["test"]:
        np.testing.assert_allclose(a["test"][name]["accuracy"], b["test"][name]["accuracy"], atol=0.006)


def test_eight_devices_were_simulated(runs):
    assert runs["device_count"] == 8


def test_one_and_eight_devices_train_the_same_model(runs):
    assert_same_run(runs["whole_1"], runs["whole_8"])


def test_checkpoints_move_between_one_and_eight_devices(runs):
    assert_same_run(runs["resumed_8_to_1"], runs["whole_1"])
    assert_same_run(runs["resumed_1_to_8"], runs["whole_8"])


def test_per_device_sam_trains_on_eight_devices_along_its_own_path(runs):
    per_device, global_sam = runs["per_device_sam_8"], runs["whole_8"]
    # The first step's loss is taken before any update; later steps follow other gradients.
    assert per_device["step_losses"][0][0] == pytest.approx(global_sam["step_losses"][0][0], rel=1e-5)
    assert np.all(np.isfinite(np.concatenate(per_device["step_losses"])))
    assert not np.allclose(per_device["step_losses"][0], global_sam["step_losses"][0], rtol=1e-4)
    assert per_device["test"]["average"]["accuracy"] > 0.5


def test_batch_must_split_evenly_over_devices():
    mesh = parallel.data_mesh(1)
    parallel.check_batch_size(7, mesh)  # One device takes any batch.
    with pytest.raises(ValueError, match=r"num_devices must be in \[0, 1\]"):
        parallel.data_mesh(2)


def test_num_devices_is_a_config_key():
    assert make_config({}, ["train.num_devices=1"]).train.num_devices == 1
    assert make_config({"train": {"num_devices": 2}}).train.num_devices == 2
