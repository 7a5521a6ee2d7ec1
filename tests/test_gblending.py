"""Specification of Gradient-Blending (Wang, Tran and Feiszli, CVPR 2020): OGR weights, super-epochs, training."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mie_jax.train import batches, feed, loop, steps, train
from mie_jax.train.methods import gblending
from tests.mfeat_small import dataset, small_config


# Float64 references, written from Eq. 3 and Eq. 6 with loops.


def ref_gain_and_overfitting(train_n, holdout_n, train_n_plus, holdout_n_plus):
    gain, overfitting = [], []
    for k in range(len(train_n)):
        gain.append(holdout_n[k] - holdout_n_plus[k])  # L*_N - L*_{N+n}
        overfitting.append((holdout_n_plus[k] - train_n_plus[k]) - (holdout_n[k] - train_n[k]))  # O_{N+n} - O_N
    return np.array(gain), np.array(overfitting)


def ref_weights(gain, overfitting, use_abs=False):
    raw = [(abs(g) if use_abs else g) / (o * o) for g, o in zip(gain, overfitting)]
    z = sum(raw)
    return np.array([r / z for r in raw])


def losses(seed, heads=4):
    rng = np.random.default_rng(seed)
    before = rng.uniform(1.5, 2.5, size=(2, heads))  # train, held-out at N
    after = before - rng.uniform(0.05, 0.6, size=(2, heads))
    return before[0], before[1], after[0], after[1]


class OGRWeightsTest(chex.TestCase):
    @pytest.fixture(autouse=True)
    def float64(self):
        with jax.enable_x64(True):
            yield

    @chex.variants(with_jit=True, without_jit=True)
    def test_gain_and_overfitting_match_eq_3(self):
        for seed in range(3):
            args = losses(seed)
            gain, overfitting = self.variant(gblending.generalization_and_overfitting)(*map(jnp.asarray, args))
            expected_gain, expected_overfitting = ref_gain_and_overfitting(*args)
            np.testing.assert_allclose(gain, expected_gain, rtol=1e-12)
            np.testing.assert_allclose(overfitting, expected_overfitting, rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_weights_match_eq_6(self):
        for seed in range(3):
            gain, overfitting = ref_gain_and_overfitting(*losses(seed))
            weights = self.variant(gblending.blending_weights)(jnp.asarray(gain), jnp.asarray(overfitting))
            np.testing.assert_allclose(weights, ref_weights(gain, overfitting), rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_abs_gain_is_balancebenchmarks_variant(self):
        gain, overfitting = np.array([0.3, -0.02, 0.1]), np.array([0.2, 0.1, -0.3])
        weights = self.variant(functools.partial(gblending.blending_weights, gain_sign="abs"))(gain, overfitting)
        np.testing.assert_allclose(weights, ref_weights(gain, overfitting, use_abs=True), rtol=1e-12)
        signed = self.variant(gblending.blending_weights)(gain, overfitting)
        np.testing.assert_allclose(signed, ref_weights(gain, overfitting), rtol=1e-12)
        self.assertLess(float(signed[1]), 0.0)  # A head whose held-out loss rose: Eq. 6 weighs it negatively.

    def test_worked_example(self):
        # dG = (0.2, 0.1), dO = (0.1, 0.1): dG / dO^2 = (20, 10), normalised (2/3, 1/3).
        weights = gblending.blending_weights(jnp.array([0.2, 0.1]), jnp.array([0.1, 0.1]))
        np.testing.assert_allclose(weights, [2 / 3, 1 / 3], rtol=1e-12)
        # Same gain, twice the overfitting: a quarter of the weight.
        weights = gblending.blending_weights(jnp.array([0.1, 0.1]), jnp.array([0.1, 0.2]))
        np.testing.assert_allclose(weights, [0.8, 0.2], rtol=1e-12)

    def test_weights_sum_to_one_and_ignore_the_losses_scale(self):
        for seed in range(5):
            args = losses(seed, heads=5)
            weights = gblending.blending_weights(*gblending.generalization_and_overfitting(*args))
            np.testing.assert_allclose(jnp.sum(weights), 1.0, rtol=1e-12)
            # Losses in other units (nats vs bits, a constant factor) give the same blend.
            scaled = gblending.blending_weights(*gblending.generalization_and_overfitting(*(3.7 * a for a in args)))
            np.testing.assert_allclose(scaled, weights, rtol=1e-12)

    def test_bad_inputs_raise(self):
        with pytest.raises(ValueError, match=r"gain_sign must be one of \['signed', 'abs'\], got 'clip'"):
            gblending.blending_weights(jnp.ones(2), jnp.ones(2), gain_sign="clip")
        with pytest.raises(ValueError, match=r"gain and overfitting must both be \[heads\].*got \(2,\) and \(3,\)"):
            gblending.blending_weights(jnp.ones(2), jnp.ones(3))
        with pytest.raises(ValueError, match=r"must both be \[heads\] with heads >= 1, got \(0,\)"):
            gblending.blending_weights(jnp.ones(0), jnp.ones(0))
        with pytest.raises(ValueError, match=r"must both be \[heads\].*got \(2, 2\)"):
            gblending.blending_weights(jnp.ones((2, 2)), jnp.ones((2, 2)))
        with pytest.raises(ValueError, match=r"losses must have one shape, got shapes \[\(2,\), \(3,\)\]"):
            gblending.generalization_and_overfitting(jnp.ones(2), jnp.ones(2), jnp.ones(3), jnp.ones(2))


class ScheduleAndSplitTest(chex.TestCase):
    def test_super_epochs_follow_algorithm_3(self):
        self.assertEqual(gblending.super_epochs(10, 3, 2), ((0, 3), (3, 2), (5, 2), (7, 2), (9, 1)))
        self.assertEqual(gblending.super_epochs(45, 10, 5)[:3], ((0, 10), (10, 5), (15, 5)))
        self.assertEqual(gblending.super_epochs(2, 10, 5), ((0, 2),))
        for total, first, length in ((7, 1, 1), (20, 10, 5), (13, 4, 3)):
            spans = gblending.super_epochs(total, first, length)
            self.assertEqual(sum(n for _, n in spans), total)
            self.assertEqual([s for s, _ in spans], [0] + list(np.cumsum([n for _, n in spans])[:-1]))

    def test_super_epochs_reject_zero_lengths(self):
        with pytest.raises(ValueError, match="length must be >= 1, got 0"):
            gblending.super_epochs(10, 3, 0)
        with pytest.raises(ValueError, match="first must be >= 1, got 0"):
            gblending.super_epochs(10, 0, 2)

    def test_holdout_split_is_a_seeded_partition(self):
        train_rows, held = batches.holdout_split(1000, 0.1, 3, "gblending.holdout_fraction")
        self.assertEqual(len(held), 100)
        np.testing.assert_array_equal(np.sort(np.concatenate([train_rows, held])), np.arange(1000))
        again_train, again_held = batches.holdout_split(1000, 0.1, 3, "gblending.holdout_fraction")
        np.testing.assert_array_equal(held, again_held)
        np.testing.assert_array_equal(train_rows, again_train)
        self.assertFalse(np.array_equal(held, batches.holdout_split(1000, 0.1, 4, "gblending.holdout_fraction")[1]))

    def test_holdout_split_needs_both_sides(self):
        with pytest.raises(ValueError, match=r"gblending.holdout_fraction=0.01 of 20 training examples holds out 0"):
            batches.holdout_split(20, 0.01, 0, "gblending.holdout_fraction")

    def test_options_are_checked(self):
        with pytest.raises(ValueError, match=r"gblending.holdout_fraction must be a finite number in \(0, 1\)"):
            gblending.GBlendingOptions(holdout_fraction=1.0)
        with pytest.raises(ValueError, match=r"gblending.mode must be one of \['online', 'offline'\]"):
            gblending.GBlendingOptions(mode="both")
        with pytest.raises(ValueError, match=r"gblending.super_epoch must be >= 1"):
            gblending.GBlendingOptions(super_epoch=0)


# End to end on mfeat's three views, small.


def config(epochs, *overrides):
    return small_config("gblending", epochs, *overrides, learning_rate=0.1)


def test_the_step_minimises_the_blended_loss_and_weights_gate_the_heads():
    method = gblending.GBlendingMethod(config(1, "optimizer.weight_decay=0"), dataset().splits["train"], 10)
    state = {**method._initial, "opt_state": method.tx.init(method._initial["params"])}
    draws = method.draws(0)
    batch = jax.tree.map(lambda a: a[0], feed.host_chunk(method.inputs, method.labels, draws, 0, 1))
    weights = jnp.array([0.1, 0.2, 0.3, 0.4], jnp.float32)
    carry = (state["params"], state["model_state"], state["opt_state"])
    _, loss = method.train_step(weights, carry, batch)
    logits = steps.apply_model(method.graphdef, state["params"], state["model_state"], batch.inputs, train=True)[0][0]
    ce = optax.softmax_cross_entropy_with_integer_labels
    per_head = [float(ce(logits[h], batch.labels).mean()) for h in method.heads]
    np.testing.assert_allclose(float(loss), np.dot([0.1, 0.2, 0.3, 0.4], per_head), rtol=1e-5)
    # Only the "mor" head's loss: the other heads and encoders do not move.
    (params, _, _), _ = method.train_step(jnp.array([0.0, 1.0, 0.0, 0.0]), carry, batch)
    before = state["params"]
    chex.assert_trees_all_equal(params["heads"]["fac"], before["heads"]["fac"])
    chex.assert_trees_all_equal(params["encoders"]["zer"], before["encoders"]["zer"])
    chex.assert_trees_all_equal(params["fused_head"], before["fused_head"])
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params["heads"]["mor"], before["heads"]["mor"])
    assert all(jax.tree.leaves(moved))


def test_trains_three_modalities_with_online_weights():
    results = train(config(4, "gblending.first_super_epoch=2", "gblending.super_epoch=2"), dataset())
    assert set(results["test"]) == {"joint"}
    assert results["finished"] and len(results["history"]) == 4
    assert results["test"]["joint"]["accuracy"] > 0.6


def test_estimated_weights_are_the_ones_trained_with():
    method = gblending.GBlendingMethod(
        config(2, "gblending.first_super_epoch=1", "gblending.super_epoch=1"), dataset().splits["train"], 10
    )
    state = method.init()
    np.testing.assert_allclose(float(jnp.sum(state["weights"])), 1.0, rtol=1e-5)
    assert method.phase_plan(state, 0).constants is state["weights"]
    after, _ = loop.run_phase(method, state, 0)
    # A super-epoch boundary: re-estimated from the new checkpoint.
    assert not np.allclose(after["weights"], state["weights"])
    # Different weights, different training.
    shifted = {**state, "weights": jnp.roll(state["weights"], 1)}
    other, _ = loop.run_phase(method, shifted, 0)
    kernel = lambda s: s["params"]["fused_head"]["fc3"]["kernel"]  # noqa: E731
    assert not np.allclose(kernel(other), kernel(after))
