"""The PyTorch twin of the mfeat MLP's steps (benchmarks/torch_step.py) agrees with the library's JAX steps.

torch is an optional benchmark dependency: without it this module is skipped.
"""

import pytest

pytest.importorskip("torch")

from benchmarks import torch_step  # noqa: E402 (needs torch)
from experiments import configs  # noqa: E402
from mie_jax.train.config import make_config  # noqa: E402

SMALL = ["model.dim=8", "model.encoder_hidden=16", "train.batch_size=6"]


def test_plain_and_mie_steps_match_jax_on_a_tiny_mlp():
    config = make_config(configs.get_config("mfeat"), SMALL, method="mie")
    problem = torch_step.build(config, in_features=12, num_classes=3, widths=(16, 8))

    errors = torch_step.check_agreement(config, problem)  # Asserts each within TOLERANCE.

    # The check can tell the steps apart: SAM and T move the update far more than the tolerance.
    assert errors["mie_vs_plain"] > 100 * torch_step.TOLERANCE


def test_unsupported_config_is_refused():
    config = make_config(configs.get_config("mfeat"), [*SMALL, "sam.normalize=per_tensor"], method="mie")
    problem = torch_step.build(config, in_features=12, num_classes=3, widths=(16, 8))
    with pytest.raises(ValueError, match=r"sam\.normalize"):
        torch_step.TorchStep(config, problem, mie=True)
