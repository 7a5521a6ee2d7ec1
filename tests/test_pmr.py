"""Specification of PMR (Fan et al., CVPR 2023): prototypes, prototypical loss, rebalancing, entropy."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mie_jax.data.registry import load_dataset
from mie_jax.train import feed, loop, make_config, steps, train
from mie_jax.train.methods import joint, pmr


@pytest.fixture
def float64():
    with jax.enable_x64(True):
        yield


def case(seed=0, batch=7, classes=4, dim=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, dim)), rng.normal(size=(classes, dim)), rng.integers(0, classes, batch)


# Float64 references, written from the equations with loops.


def ref_probabilities(z, c):
    p = np.zeros((len(z), len(c)))
    for i in range(len(z)):
        e = [np.exp(-np.sqrt(np.sum((z[i] - c[k]) ** 2))) for k in range(len(c))]
        p[i] = np.array(e) / sum(e)
    return p


def ref_pce(z, c, y):
    p = ref_probabilities(z, c)
    return -np.mean([np.log(p[i, y[i]]) for i in range(len(z))])


def ref_confidence(z, c, y):
    p = ref_probabilities(z, c)
    return sum(p[i, y[i]] for i in range(len(z)))


def ref_entropy(z, c):
    p = ref_probabilities(z, c)
    return np.mean([-sum(p[i, k] * np.log(p[i, k]) for k in range(len(c))) for i in range(len(z))])


def ref_ratios(s):
    return np.array([s[j] / np.mean([s[k] for k in range(len(s)) if k != j]) for j in range(len(s))])


@pytest.mark.usefixtures("float64")
class PrototypeLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_logits_are_minus_euclidean_distances(self):
        z, c, _ = case()
        out = self.variant(pmr.prototype_logits)(z, c)
        expected = [[-np.sqrt(np.sum((zi - ck) ** 2)) for ck in c] for zi in z]
        np.testing.assert_allclose(out, expected, rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_prototype_cross_entropy_matches_reference(self):
        z, c, y = case(1)
        np.testing.assert_allclose(self.variant(pmr.prototype_cross_entropy)(z, c, y), ref_pce(z, c, y), rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_confidence_matches_reference(self):
        z, c, y = case(2)
        np.testing.assert_allclose(self.variant(pmr.prototype_confidence)(z, c, y), ref_confidence(z, c, y), rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_entropy_matches_reference(self):
        z, c, _ = case(3)
        np.testing.assert_allclose(self.variant(pmr.prototype_entropy)(z, c), ref_entropy(z, c), rtol=1e-12)

    def test_entropy_is_log_classes_for_equidistant_prototypes_and_small_near_one(self):
        c = np.eye(4) * 10.0
        np.testing.assert_allclose(pmr.prototype_entropy(np.zeros((2, 4)), c), np.log(4), rtol=1e-12)
        self.assertLess(float(pmr.prototype_entropy(c[:1], c)), 0.01)

    def test_pulling_a_feature_to_its_prototype_lowers_the_loss(self):
        z, c, y = case(4)
        closer = z + 0.5 * (c[y] - z)
        self.assertLess(float(pmr.prototype_cross_entropy(closer, c, y)), float(pmr.prototype_cross_entropy(z, c, y)))

    def test_gradient_is_finite_on_a_prototype(self):
        _, c, _ = case(5)
        grad = jax.grad(pmr.prototype_cross_entropy)(c[:2], c, jnp.array([0, 1]))
        self.assertTrue(np.all(np.isfinite(grad)))

    def test_bad_shapes_raise(self):
        z, c, y = case()
        with pytest.raises(ValueError, match=r"features must be \[batch, dim\]"):
            pmr.prototype_logits(z[0], c)
        with pytest.raises(ValueError, match=r"prototypes must be \[classes, 3\]"):
            pmr.prototype_logits(z, c[:, :2])
        with pytest.raises(ValueError, match=r"labels must be \[7\]"):
            pmr.prototype_cross_entropy(z, c, y[:3])


@pytest.mark.usefixtures("float64")
class RebalanceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_ratios_match_reference(self):
        s = np.array([3.0, 1.5, 2.2])
        np.testing.assert_allclose(self.variant(pmr.imbalance_ratios)(s), ref_ratios(s), rtol=1e-12)

    def test_two_modalities_give_rho_and_its_reciprocal(self):
        r = pmr.imbalance_ratios(np.array([3.0, 2.0]))
        np.testing.assert_allclose(r, [1.5, 1 / 1.5], rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_coefficients_match_reference(self):
        ratios = np.array([1.3, 0.8, 0.4, 1.0])
        alpha, mu = 0.7, 0.2
        beta = self.variant(pmr.rebalance_coefficients)(ratios, alpha)
        gamma = self.variant(pmr.entropy_coefficients)(ratios, mu)
        expected_beta = [alpha * min(max(1 / r - 1, 0.0), 1.0) for r in ratios]
        expected_gamma = [mu * min(max(r - 1, 0.0), 1.0) for r in ratios]
        np.testing.assert_allclose(beta, expected_beta, rtol=1e-12)
        np.testing.assert_allclose(gamma, expected_gamma, rtol=1e-12)

    def test_binary_coefficients_are_the_authors_code(self):
        beta = pmr.rebalance_coefficients(np.array([1.3, 0.8, 1.0]), 0.5, binary=True)
        np.testing.assert_array_equal(beta, [0.0, 0.5, 0.0])

    def test_two_modalities_pair_the_weak_loss_with_the_dominant_entropy(self):
        for s in itertools.product([0.5, 1.0, 2.0, 7.0], repeat=2):
            ratios = pmr.imbalance_ratios(np.array(s))
            beta = pmr.rebalance_coefficients(ratios, 2.0)
            gamma = pmr.entropy_coefficients(ratios, 0.1)
            # The weak modality's loss weight and the dominant one's entropy weight move together.
            np.testing.assert_allclose(gamma[::-1] * 2.0 / 0.1, beta, rtol=1e-12)
            self.assertTrue(float(beta[0]) == 0.0 or float(beta[1]) == 0.0)

    def test_bad_inputs_raise(self):
        with pytest.raises(ValueError, match=r"confidences must be \[modalities\] with at least 2"):
            pmr.imbalance_ratios(np.array([1.0]))
        with pytest.raises(ValueError, match="alpha must be >= 0"):
            pmr.rebalance_coefficients(np.ones(2), -1.0)
        with pytest.raises(ValueError, match="mu must be >= 0"):
            pmr.entropy_coefficients(np.ones(2), -0.1)


@pytest.mark.usefixtures("float64")
class PrototypeUpdateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_class_sums_over_batches_give_class_means(self):
        rng = np.random.default_rng(6)
        z, y = rng.normal(size=(10, 3)), np.array([0, 1, 1, 2, 0, 0, 2, 1, 1, 0])
        sums, counts = np.zeros((4, 3)), np.zeros(4)
        for rows in (slice(0, 4), slice(4, 10)):
            s, n = self.variant(pmr.class_sums, static_argnums=2)(z[rows], y[rows], 4)
            sums, counts = sums + s, counts + n
        previous = rng.normal(size=(4, 3))
        out = pmr.updated_prototypes(previous, sums, counts)
        for k in range(3):
            np.testing.assert_allclose(out[k], z[y == k].mean(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(out[3], previous[3])  # Class 3 unseen: kept.

    def test_padded_rows_do_not_count(self):
        z = np.arange(6.0).reshape(3, 2)
        sums, counts = pmr.class_sums(z, np.array([0, 0, 1]), 2, weights=np.array([1.0, 0.0, 1.0]))
        np.testing.assert_array_equal(sums, [[0.0, 1.0], [4.0, 5.0]])
        np.testing.assert_array_equal(counts, [1.0, 1.0])

    def test_momentum_mixes_the_previous_prototypes(self):
        previous, sums, counts = np.ones((2, 2)), np.array([[4.0, 8.0], [3.0, 3.0]]), np.array([2.0, 1.0])
        out = pmr.updated_prototypes(previous, sums, counts, momentum=0.2)
        np.testing.assert_allclose(out, 0.8 * np.array([[2.0, 4.0], [3.0, 3.0]]) + 0.2, rtol=1e-12)

    def test_bad_inputs_raise(self):
        with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
            pmr.updated_prototypes(np.zeros((2, 2)), np.zeros((2, 2)), np.ones(2), momentum=1.0)
        with pytest.raises(ValueError, match="previous and sums must be"):
            pmr.updated_prototypes(np.zeros((3, 2)), np.zeros((2, 2)), np.ones(2))
        with pytest.raises(ValueError, match=r"features must be \[batch, dim\] with labels \[batch\]"):
            pmr.class_sums(np.zeros((3, 2)), np.zeros(2, int), 2)


@pytest.mark.usefixtures("float64")
class OptionsTest(chex.TestCase):
    def test_bad_options_name_the_key(self):
        with pytest.raises(ValueError, match=r"pmr.alpha must be a finite number in \[0, inf\)"):
            pmr.PMROptions(alpha=-1.0)
        with pytest.raises(ValueError, match=r"pmr.coefficient must be one of \['clip', 'binary'\]"):
            pmr.PMROptions(coefficient="tanh")
        with pytest.raises(ValueError, match=r"pmr.prototype_fraction must be a finite number in \(0, 1\]"):
            pmr.PMROptions(prototype_fraction=0.0)


# The method: PMR's terms in the training step, on mfeat.

THREE_VIEWS = ("fac", "mor", "zer")


@functools.cache
def dataset():
    return load_dataset("mfeat", THREE_VIEWS)


def config(*overrides, method="pmr", epochs=2):
    base = {
        "modalities": THREE_VIEWS,
        "model": {"dim": 16, "encoder_hidden": 32},
        "train": {"batch_size": 100, "outer_iterations": 1, "phase_epochs": epochs},
        "optimizer": {"learning_rate": 0.1},
    }
    return make_config(base, list(overrides), method=method)


def first_batch(method):
    return jax.tree.map(lambda a: a[0], feed.host_chunk(method.inputs, method.labels, method.draws(0), 0, 1))


def test_prototypes_are_the_class_means_of_the_encoders_features():
    method = pmr.PMRMethod(config("pmr.prototype_momentum=0.5"), dataset().splits["train"], 10)
    state = method.init()
    features = np.asarray(method._features(state["params"], state["model_state"], method.inputs), np.float64)
    for i, name in enumerate(method.names):
        for k in range(10):
            np.testing.assert_allclose(
                state["prototypes"][name][k], features[method.labels == k, i].mean(axis=0), rtol=1e-5, atol=1e-6
            )
    after, _ = loop.run_phase(method, state, 0)
    trained = np.asarray(method._features(after["params"], after["model_state"], method.inputs), np.float64)
    means = np.stack([trained[method.labels == k, 0].mean(axis=0) for k in range(10)])
    expected = 0.5 * means + 0.5 * np.asarray(state["prototypes"][method.names[0]])
    np.testing.assert_allclose(after["prototypes"][method.names[0]], expected, rtol=1e-5, atol=1e-6)


def test_the_step_minimises_ce_plus_weighted_prototype_losses_minus_weighted_entropies():
    method = pmr.PMRMethod(config("pmr.mu=0.3"), dataset().splits["train"], 10)
    state = method.init()
    plan = method.phase_plan(state, 0)
    batch = first_batch(method)
    _, loss = method.train_step(plan.constants, plan.carry, batch)
    # The same loss from float64 references on the features of the batch.
    (logits, features), _ = steps.apply_model(
        method.graphdef, state["params"], state["model_state"], batch.inputs, train=True
    )
    y = np.asarray(batch.labels)
    logits = np.asarray(logits, np.float64)
    ce = np.mean([np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[label] for row, label in zip(logits, y)])
    z = {n: np.asarray(features[n], np.float64) for n in method.names}
    c = {n: np.asarray(state["prototypes"][n], np.float64) for n in method.names}
    ratios = ref_ratios([ref_confidence(z[n], c[n], y) for n in method.names])
    expected = ce
    for n, r in zip(method.names, ratios):
        expected += 1.0 * min(max(1 / r - 1, 0.0), 1.0) * ref_pce(z[n], c[n], y)
        expected -= 0.3 * min(max(r - 1, 0.0), 1.0) * ref_entropy(z[n], c[n])
    assert abs(ratios[0] - 1) > 1e-3  # Some modality is ahead, so the terms are not all zero.
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_the_entropy_acts_only_in_its_first_epochs_and_rebalancing_in_its_window():
    overrides = ("pmr.mu=0.3", "pmr.entropy_epochs=1", "pmr.rebalance_epochs=2")
    method = pmr.PMRMethod(config(*overrides, epochs=3), dataset().splits["train"], 10)
    state = method.init()
    batch = first_batch(method)
    losses = []
    for phase in range(3):
        plan = method.phase_plan(state, phase)
        losses.append(float(method.train_step(plan.constants, plan.carry, batch)[1]))
    (logits, _), _ = steps.apply_model(method.graphdef, state["params"], state["model_state"], batch.inputs, train=True)
    ce = float(optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels).mean())
    np.testing.assert_allclose(losses[2], ce, rtol=1e-6)  # Both terms off: joint training's loss.
    assert losses[0] < losses[1] and losses[1] > ce  # The entropy is subtracted in epoch 1 only.


def test_without_its_terms_pmr_is_joint_training_and_alpha_changes_the_result():
    def one_epoch(*overrides, method="pmr"):
        built = (pmr.PMRMethod if method == "pmr" else joint.JointMethod)(
            config(*overrides, method=method), dataset().splits["train"], 10
        )
        return loop.run_phase(built, built.init(), 0)[0]["params"]

    off = one_epoch("pmr.alpha=0", "pmr.mu=0")
    chex.assert_trees_all_close(off, one_epoch(method="joint"), rtol=1e-5, atol=1e-6)
    on = one_epoch("pmr.alpha=2", "pmr.mu=0")
    assert not np.allclose(on["encoders"]["fac"]["out"]["kernel"], off["encoders"]["fac"]["out"]["kernel"])


def test_trains_three_modalities():
    results = train(config(), dataset(), quiet=True)
    assert results["finished"] and len(results["history"]) == 2
    assert set(results["test"]) == {"joint"}
    assert results["test"]["joint"]["accuracy"] > 0.6
