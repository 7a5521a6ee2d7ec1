"""The trainer's SAM options: per-device perturbation (each part of the batch along its own gradient), head only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mie_jax
from experiments import configs
from mie_jax.models.encoders import build_unimodal_classifier
from mie_jax.train import feed, make_config, steps
from mie_jax.train.methods.alternating import make_train_step, zero_covariances

BATCH, FEATURES, CLASSES, RHO, LR = 8, 6, 3, 0.5, 0.1


def setup(sam_per_device, sam_params="all"):
    config = make_config(
        {
            **configs.get_config("mfeat"),
            "optimizer": {"momentum": 0.0, "weight_decay": 0.0, "learning_rate": LR},
            "model": {"dim": 8, "encoder_hidden": 8},
            "sam": {"rho": RHO, "per_device": sam_per_device, "params": sam_params},
        },
        method="mie",
    )
    model = build_unimodal_classifier(config, "mlp", (FEATURES,), CLASSES, nnx.Rngs(0))
    graphdef, params, model_state = steps.split_model(model)
    tx = steps.make_optimizer(config.optimizer, sam=config.sam, steps_per_epoch=1)
    return graphdef, params, model_state, tx


def one_step(sam_groups):
    graphdef, params, model_state, tx = setup(sam_per_device=sam_groups > 0)
    step = jax.jit(make_train_step(graphdef, tx, "x", sam_groups=sam_groups))
    x = jax.random.normal(jax.random.key(1), (BATCH, FEATURES))
    y = jnp.arange(BATCH) % CLASSES
    batch = feed.Batch({"x": x}, y, jnp.ones(()), jnp.arange(BATCH), {})
    (trained, *_), _ = step(None, (params, model_state, tx.init(params), zero_covariances(params)), batch)
    return trained, (graphdef, params, model_state, x, y)


def reference_step(graphdef, params, model_state, x, y, groups):
    """SGD on the mean over parts of the gradient at params + rho * g_k / ||g_k||, part by part."""

    def loss(p, xs, ys):
        (logits, _), _ = steps.apply_model(graphdef, p, model_state, xs, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

    adversarial = []
    for xs, ys in zip(jnp.split(x, groups), jnp.split(y, groups)):
        eps = mie_jax.sam_perturbation(jax.grad(loss)(params, xs, ys), RHO)
        adversarial.append(jax.grad(loss)(jax.tree.map(jnp.add, params, eps), xs, ys))
    mean = jax.tree.map(lambda *g: sum(g) / groups, *adversarial)
    return jax.tree.map(lambda p, g: p - LR * g, params, mean)


@pytest.mark.parametrize("groups", [2, 4])
def test_each_part_is_perturbed_along_its_own_gradient(groups):
    trained, inputs = one_step(groups)
    expected = reference_step(*inputs, groups)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), trained, expected)


def test_one_group_is_global_sam_and_more_groups_differ():
    global_sam, inputs = one_step(0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), one_step(1)[0], global_sam)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), global_sam, reference_step(*inputs, 1)
    )
    differences = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), one_step(2)[0], global_sam))
    assert max(differences) > 1e-4


def test_head_only_sam_leaves_the_encoder_unperturbed():
    _, params, _, tx = setup(sam_per_device=False, sam_params="head")
    grads = jax.tree.map(jnp.ones_like, params)
    # grad_fn returns its argument: the point SAM asks the gradient at.
    updates, _ = tx.update(grads, tx.init(params), params, grad_fn=lambda p, i: p, value=jnp.zeros(()))
    point = jax.tree.map(lambda step: -step / LR, updates)  # Plain SGD's update is -lr times it.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), point["encoder"], params["encoder"])
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), point["head"], params["head"]))
    assert min(moved) > 0
