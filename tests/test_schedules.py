"""The learning-rate schedules of ``make_optimizer``: constant, the released code's StepLR, the paper's plateau."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import configs
from mie_jax.train import make_config
from mie_jax.train.steps import make_optimizer

STEPS_PER_EPOCH = 3


def sgd_steps(schedule, losses, **settings):
    """The learning rate of each step: plain SGD (no momentum, no decay) on a unit gradient.

    ``settings`` are more keys of the ``optimizer`` section.
    """
    optimizer = {"learning_rate": 0.5, "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": schedule, **settings}
    config = make_config({**configs.get_config("mfeat"), "optimizer": optimizer})
    tx = make_optimizer(config.optimizer, sam=None, steps_per_epoch=STEPS_PER_EPOCH)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    rates = []
    for loss in losses:
        updates, state = tx.update({"w": jnp.ones(())}, state, params, value=jnp.asarray(loss))
        rates.append(-float(updates["w"]))
    return np.array(rates)


def test_constant_keeps_the_learning_rate():
    np.testing.assert_allclose(sgd_steps("constant", [1.0] * 12), 0.5)


def test_step_multiplies_by_the_decay_every_period_of_epochs():
    rates = sgd_steps("step", [1.0] * 15, lr_step_epochs=2, lr_decay=0.1)
    expected = np.repeat([0.5, 0.05, 0.005], 2 * STEPS_PER_EPOCH)[:15]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_plateau_decays_only_after_patience_epochs_without_improvement():
    improving = [3.0, 2.0, 1.0]  # Per-epoch means; each epoch is STEPS_PER_EPOCH steps of one loss.
    flat = [1.0] * 4
    losses = np.repeat(improving + flat, STEPS_PER_EPOCH)
    rates = sgd_steps("plateau", losses, lr_patience=2, lr_decay=0.1)
    starts = rates.reshape(-1, STEPS_PER_EPOCH)[:, 0]  # The rate each epoch starts with.
    # Two flat epochs (3 and 4) without improvement: the rate drops once, and the count starts again.
    np.testing.assert_allclose(starts, [0.5, 0.5, 0.5, 0.5, 0.5, 0.05, 0.05], rtol=1e-6)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match=r"optimizer\.lr_schedule must be one of"):
        make_config(configs.get_config("mfeat"), ["optimizer.lr_schedule=cosine"])


@pytest.mark.parametrize("dataset", ["cremad", "kinetics_sounds", "twitter2015", "sarcasm", "nvgesture"])
def test_paper_configs_use_the_papers_schedule_and_the_released_one_on_request(dataset):
    base = configs.get_config(dataset)
    paper = make_config(base)
    reference = make_config(base, variant="reference")
    assert paper.optimizer.lr_schedule == ("constant" if paper.optimizer.name == "adam" else "plateau")
    assert reference.optimizer.lr_schedule == "step" and reference.alternating.fresh_optimizer_per_phase
    assert len(paper.train.phase_schedule) >= 1 and paper.mie.tau == 0.4
