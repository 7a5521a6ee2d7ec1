"""Runs in a subprocess with 8 simulated CPU devices (XLA_FLAGS is set before jax loads).

Prints one JSON object: step losses and test metrics of the same small MIE run
on 1 and on 8 devices, of runs resumed across device counts, and of per-device
SAM on 8 devices.
"""

import json
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402  (must come after XLA_FLAGS)

from mie_jax.data.registry import load_dataset  # noqa: E402
from mie_jax.train import make_config, train  # noqa: E402

BASE = {
    "modalities": ("fac", "mor"),
    "model": {"dim": 16, "encoder_hidden": 32},
    "train": {"outer_iterations": 1, "phase_epochs": 1, "batch_size": 96},
}


def config(method, devices, *overrides):
    return make_config(BASE, [f"train.num_devices={devices}", *overrides], method=method)


def summary(results):
    return {
        "step_losses": [r["step_losses"] for r in results["history"]],
        "test": results["test"],
        "selected_phase": results["selected_phase"],
    }


def main():
    method = sys.argv[1] if len(sys.argv) > 1 else "mie"
    dataset = load_dataset("mfeat", BASE["modalities"])
    out = {"device_count": jax.device_count()}
    for devices in (1, 8):
        out[f"whole_{devices}"] = summary(train(config(method, devices), dataset))
    # Per-device SAM: each of the 8 devices perturbs along its own part of the batch.
    out["per_device_sam_8"] = summary(train(config(method, 8, "sam.per_device=true"), dataset))
    for first, then in ((8, 1), (1, 8)):
        with tempfile.TemporaryDirectory() as workdir:
            train(config(method, first), dataset, workdir=workdir, stop_after_phase=1)
            resumed = train(config(method, then), dataset, workdir=workdir, resume=True)
        out[f"resumed_{first}_to_{then}"] = summary(resumed)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
