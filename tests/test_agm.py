"""Specification of AGM (Li et al., ICCV 2023): Shapley mono-modal responses and the modulation coefficients."""

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mie_jax.data.registry import load_dataset
from mie_jax.train import feed, loop, make_config, train
from mie_jax.train.methods import agm, joint


@pytest.fixture
def float64():
    with jax.enable_x64(True):
        yield


# Float64 references, written from the equations with loops.


def ref_shapley(value, m):
    """phi^j = sum over S without j of |S|! (m - |S| - 1)! / m! (V(S + j) - V(S)); value: frozenset -> array."""
    out = []
    for j in range(m):
        others = [k for k in range(m) if k != j]
        total = 0.0
        for size in range(m):
            for subset in itertools.combinations(others, size):
                w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                total = total + w * (value(frozenset(subset) | {j}) - value(frozenset(subset)))
        out.append(total)
    return np.stack(out)


def table(value, m):
    """The coalition values as AGM's rows: row s holds modality j when bit j of s is set."""
    return np.stack([value(frozenset(j for j in range(m) if s >> j & 1)) for s in range(2**m)])


def ref_scores(responses, labels):
    out = []
    for r in responses:
        ce = []
        for i in range(len(labels)):
            e = np.exp(r[i] - r[i].max())
            ce.append(-np.log(e[labels[i]] / e.sum()))
        out.append(np.mean(ce))
    return np.array(out)


def ref_ratios(s):
    m = len(s)
    return np.array([np.exp(m / (m - 1) * (np.mean(s) - s[j])) for j in range(m)])


@pytest.mark.usefixtures("float64")
class ShapleyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_reference_for_two_to_four_modalities(self):
        rng = np.random.default_rng(0)
        for m in (2, 3, 4):
            values = {
                frozenset(c): rng.normal(size=(5, 3)) for n in range(m + 1) for c in itertools.combinations(range(m), n)
            }
            values[frozenset()] = np.zeros((5, 3))  # AGM's V({}) = 0.
            out = self.variant(agm.shapley_responses)(table(values.__getitem__, m))
            np.testing.assert_allclose(out, ref_shapley(values.__getitem__, m), rtol=1e-12, atol=1e-12)

    def test_two_modalities_are_the_authors_formula(self):
        rng = np.random.default_rng(1)
        both, audio_only, visual_only = rng.normal(size=(3, 4, 6))
        # Rows: {}, {audio}, {visual}, {audio, visual}.
        out = agm.shapley_responses(np.stack([np.zeros((4, 6)), audio_only, visual_only, both]))
        np.testing.assert_allclose(out[0], 0.5 * (both - visual_only + audio_only), rtol=1e-12)
        np.testing.assert_allclose(out[1], 0.5 * (both - audio_only + visual_only), rtol=1e-12)

    def test_three_modalities_are_the_authors_formula(self):
        rng = np.random.default_rng(2)
        v = {frozenset(c): rng.normal(size=4) for n in range(1, 4) for c in itertools.combinations("avt", n)}
        rows = np.stack(
            [np.zeros(4)] + [v[frozenset(x for j, x in enumerate("avt") if s >> j & 1)] for s in range(1, 8)]
        )
        audio = agm.shapley_responses(rows)[0]
        a, at, av, avt, t, vt, vv = (v[frozenset(k)] for k in ("a", "at", "av", "avt", "t", "vt", "v"))
        # model/URFunny_net.py's Modality_Audio.
        np.testing.assert_allclose(audio, (avt - vt + a) / 3 + (at - vv + av - t) / 6, rtol=1e-12)

    def test_efficiency_dummy_and_additivity(self):
        rng = np.random.default_rng(3)
        f = rng.normal(size=(3, 5))
        # An additive model: each modality's response is its own term; a modality without effect gets zero.
        additive = table(lambda s: sum((f[j] for j in s), np.zeros(5)), 3)
        np.testing.assert_allclose(agm.shapley_responses(additive), f, rtol=1e-12, atol=1e-12)
        dummy = table(lambda s: np.full(5, 7.0) * (0 in s) * (1 in s), 3)
        np.testing.assert_allclose(agm.shapley_responses(dummy)[2], 0.0, atol=1e-12)
        values = rng.normal(size=(8, 2, 5))
        np.testing.assert_allclose(agm.shapley_responses(values).sum(0), values[7] - values[0], rtol=1e-12)

    def test_bad_shapes_raise(self):
        with pytest.raises(
            ValueError, match=r"coalition_values must be \[2\*\*M, ...\] with M >= 2, got shape \(6, 3\)"
        ):
            agm.shapley_responses(np.zeros((6, 3)))
        with pytest.raises(ValueError, match="num_modalities must be >= 2"):
            agm.shapley_weight_matrix(1)


@pytest.mark.usefixtures("float64")
class ModulationTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_scores_match_reference(self):
        rng = np.random.default_rng(4)
        responses, labels = rng.normal(size=(3, 6, 4)) * 3, rng.integers(0, 4, 6)
        out = self.variant(agm.mono_modal_scores)(responses, labels)
        np.testing.assert_allclose(out, ref_scores(responses, labels), rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ratios_match_reference(self):
        s = np.array([0.3, 1.2, 0.9])
        np.testing.assert_allclose(self.variant(agm.competition_ratios)(s), ref_ratios(s), rtol=1e-12)
        s2 = np.array([0.4, 1.1])
        np.testing.assert_allclose(agm.competition_ratios(s2), [np.exp(1.1 - 0.4), np.exp(0.4 - 1.1)], rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_coefficients_match_reference(self):
        s, running, alpha = np.array([0.3, 1.2, 0.9]), np.array([0.8, 0.7, 1.0]), 0.6
        out = self.variant(agm.modulation_coefficients)(s, running, alpha)
        expected = np.exp(alpha * (ref_ratios(running) - ref_ratios(s)))
        np.testing.assert_allclose(out, expected, rtol=1e-12)

    def test_a_modality_ahead_of_its_pace_is_slowed(self):
        # Modality 0 was level with 1 on average, now scores better: slowed; 1 is sped up.
        kappa = agm.modulation_coefficients(np.array([0.2, 1.0]), np.array([0.6, 0.6]), 1.0)
        self.assertLess(float(kappa[0]), 1.0)
        self.assertGreater(float(kappa[1]), 1.0)
        np.testing.assert_allclose(agm.modulation_coefficients(np.ones(3), np.ones(3), 2.0), np.ones(3))

    def test_cap_limits_the_exponent(self):
        s, running = np.array([3.0, 0.0]), np.array([0.0, 3.0])
        out = agm.modulation_coefficients(s, running, 0.5, max_exponent=2.0)
        gap = ref_ratios(running) - ref_ratios(s)
        np.testing.assert_allclose(out, np.exp(0.5 * np.minimum(gap, 2.0)), rtol=1e-12)
        self.assertGreater(gap[0], 2.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_running_scores_are_the_mean_so_far(self):
        rng = np.random.default_rng(5)
        history = rng.normal(size=(6, 3))
        running = np.zeros(3)
        update = self.variant(agm.update_running_scores)
        for t, scores in enumerate(history, start=1):
            running = update(running, scores, t)
            np.testing.assert_allclose(running, history[:t].mean(axis=0), rtol=1e-12)

    def test_scale_gradient_scales_only_the_backward_pass(self):
        x = jnp.array([1.0, -2.0, 3.0])
        np.testing.assert_array_equal(agm.scale_gradient(x, 0.25), x)
        grad = jax.grad(lambda v: jnp.sum(agm.scale_gradient(v, 0.25) ** 2))(x)
        np.testing.assert_allclose(grad, 0.25 * 2 * x, rtol=1e-12)
        scale_grad = jax.grad(lambda k: jnp.sum(agm.scale_gradient(x, k)))(0.5)
        self.assertEqual(float(scale_grad), 0.0)

    def test_bad_inputs_raise(self):
        with pytest.raises(ValueError, match=r"responses must be \[M, batch, classes\] with labels \[batch\]"):
            agm.mono_modal_scores(np.zeros((2, 3, 4)), np.zeros(2, int))
        with pytest.raises(ValueError, match=r"scores must be \[modalities\] with at least 2"):
            agm.competition_ratios(np.zeros(1))
        with pytest.raises(ValueError, match="alpha must be >= 0"):
            agm.modulation_coefficients(np.zeros(2), np.zeros(2), -1.0)
        with pytest.raises(ValueError, match=r"running_scores must have shape \(2,\)"):
            agm.modulation_coefficients(np.zeros(2), np.zeros(3), 1.0)
        with pytest.raises(ValueError, match="step must be >= 1, got 0"):
            agm.update_running_scores(np.zeros(2), np.zeros(2), 0)


@pytest.mark.usefixtures("float64")
class OptionsTest(chex.TestCase):
    def test_bad_options_name_the_key(self):
        with pytest.raises(ValueError, match=r"agm.alpha must be a finite number in \[0, inf\)"):
            agm.AGMOptions(alpha=-0.5)
        with pytest.raises(ValueError, match=r"agm.padding must be one of \['input', 'features'\]"):
            agm.AGMOptions(padding="mean")
        with pytest.raises(ValueError, match=r"agm.max_exponent must be a finite number in \(0, inf\)"):
            agm.AGMOptions(max_exponent=0.0)
        self.assertIsNone(agm.AGMOptions().max_exponent)


# The method: AGM's modulation in the training step, on mfeat.

THREE_VIEWS = ("fac", "mor", "zer")


@functools.cache
def dataset():
    return load_dataset("mfeat", THREE_VIEWS)


def config(*overrides, method="agm", epochs=2):
    base = {
        "modalities": THREE_VIEWS,
        "model": {"dim": 16, "encoder_hidden": 32},
        "train": {"batch_size": 100, "outer_iterations": 1, "phase_epochs": epochs},
        "optimizer": {"learning_rate": 0.1, "weight_decay": 0.0},
    }
    return make_config(base, list(overrides), method=method)


def first_batch(method):
    return jax.tree.map(lambda a: a[0], feed.host_chunk(method.inputs, method.labels, method.draws(0), 0, 1))


def one_step(method, phase=0):
    state = method.init()
    plan = method.phase_plan(state, phase)
    (params, _, _, agm_state), loss = method.train_step(plan.constants, plan.carry, first_batch(method))
    return state, params, agm_state, loss


@pytest.mark.parametrize("padding", ["input", "features"])
def test_coalitions_are_the_model_with_the_other_modalities_zeroed(padding):
    method = agm.AGMMethod(config(f"agm.padding={padding}"), dataset().splits["train"], 10)
    state, x = method.init(), first_batch(method).inputs
    values, logits, _ = method.coalition_logits(state["params"], state["model_state"], x)
    model = nnx.merge(method.graphdef, state["params"], state["model_state"])
    _, features = model(x)
    for s in range(1, 8):
        present = [s >> j & 1 for j in range(3)]
        if padding == "input":
            expected = model({n: x[n] if keep else jnp.zeros_like(x[n]) for n, keep in zip(method.names, present)})[0]
        else:
            fused = [features[n] if keep else jnp.zeros_like(features[n]) for n, keep in zip(method.names, present)]
            expected = model.head(jnp.concatenate(fused, axis=-1))[0]
        np.testing.assert_allclose(values[s], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(values[0], 0.0)
    np.testing.assert_allclose(agm.shapley_responses(values).sum(0), logits, rtol=1e-4, atol=1e-5)


def test_the_step_scales_each_response_gradient_by_its_coefficient():
    method = agm.AGMMethod(config("agm.alpha=0.8"), dataset().splits["train"], 10)
    state, params, agm_state, _ = one_step(method)
    batch = first_batch(method)
    y = np.asarray(batch.labels)

    def responses_of(p):
        return agm.shapley_responses(method.coalition_logits(p, state["model_state"], batch.inputs)[0])

    responses, vjp = jax.vjp(responses_of, state["params"])
    r64 = np.asarray(responses, np.float64)
    scores = ref_scores(r64, y)
    kappa = np.exp(0.8 * (1.0 - ref_ratios(scores)))  # Running scores start at 0: r_bar = 1.
    fused = r64.sum(0)
    probabilities = np.exp(fused - fused.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    d_fused = (probabilities - np.eye(10)[y]) / len(y)
    (grads,) = vjp(jnp.asarray(kappa[:, None, None] * d_fused[None], jnp.float32))
    # The first SGD step (no weight decay): params - lr * g.
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, state["params"], grads)
    chex.assert_trees_all_close(params, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(agm_state["running_scores"], scores, rtol=1e-5)
    assert int(agm_state["step"]) == 1 and not np.allclose(kappa, 1.0, atol=1e-3)


def test_without_modulation_agm_is_joint_training():
    def one_epoch(*overrides, method="agm"):
        built = (agm.AGMMethod if method == "agm" else joint.JointMethod)(
            config(*overrides, method=method), dataset().splits["train"], 10
        )
        return loop.run_phase(built, built.init(), 0)[0]["params"]

    joint_params = one_epoch(method="joint")
    for target in ("responses", "encoders"):
        chex.assert_trees_all_close(
            one_epoch("agm.alpha=0", f"agm.target={target}"), joint_params, rtol=1e-4, atol=1e-5
        )
    modulated = one_epoch("agm.alpha=1")
    assert not np.allclose(
        modulated["encoders"]["fac"]["out"]["kernel"], joint_params["encoders"]["fac"]["out"]["kernel"]
    )


def test_the_coefficients_act_only_in_their_epochs_while_the_scores_keep_running():
    method = agm.AGMMethod(config("agm.modulation_epochs=1", "agm.alpha=0.8"), dataset().splits["train"], 10)
    _, params_after, agm_after, _ = one_step(method, phase=1)
    _, params_plain, _, _ = one_step(agm.AGMMethod(config("agm.alpha=0"), dataset().splits["train"], 10))
    chex.assert_trees_all_close(params_after, params_plain, rtol=1e-5, atol=1e-7)
    assert int(agm_after["step"]) == 1 and np.all(np.asarray(agm_after["running_scores"]) > 0)
    assert bool(method.phase_plan(method.init(), 0).constants) and not bool(
        method.phase_plan(method.init(), 1).constants
    )


def test_running_scores_average_the_steps_so_far():
    method = agm.AGMMethod(config(), dataset().splits["train"], 10)
    state = method.init()
    plan = method.phase_plan(state, 0)
    chunk = feed.host_chunk(method.inputs, method.labels, plan.draws, 0, 2)
    batches = [jax.tree.map(lambda a, i=i: a[i], chunk) for i in range(2)]
    carry, scores = plan.carry, []
    for batch in batches:
        values = method.coalition_logits(carry[0], carry[1], batch.inputs)[0]
        scores.append(ref_scores(np.asarray(agm.shapley_responses(values), np.float64), np.asarray(batch.labels)))
        carry, _ = method.train_step(plan.constants, carry, batch)
    np.testing.assert_allclose(carry[3]["running_scores"], np.mean(scores, axis=0), rtol=1e-5)
    assert int(carry[3]["step"]) == 2


def test_clip_norm_clips_the_whole_gradient_only_when_the_head_kernel_gradient_is_large():
    def update(*overrides):
        state, params, _, _ = one_step(agm.AGMMethod(config(*overrides), dataset().splits["train"], 10))
        return jax.tree.map(lambda a, b: (b - a) / 0.1, params, state["params"])  # The gradient: lr 0.1, plain SGD.

    grads = update()
    largest, norm = float(jnp.max(jnp.abs(grads["head"]["fc1"]["kernel"]))), float(optax.tree.norm(grads))
    assert largest < norm
    chex.assert_trees_all_close(update(f"agm.clip_norm={(largest + norm) / 2}"), grads, rtol=1e-5, atol=1e-7)
    clipped = update(f"agm.clip_norm={largest / 2}")
    np.testing.assert_allclose(float(optax.tree.norm(clipped)), largest / 2, rtol=1e-3)


def test_trains_three_modalities():
    results = train(config(), dataset(), quiet=True)
    assert results["finished"] and len(results["history"]) == 2
    assert set(results["test"]) == {"joint"}
    assert results["test"]["joint"]["accuracy"] > 0.6
