"""Specification of MSLR (Yao and Mihalcea, Findings of ACL 2022): per-modality rates, their updates, training."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mie_jax.train import feed, loop, steps, train
from mie_jax.train.methods import mslr
from tests.mfeat_small import THREE_VIEWS, dataset, small_config


# Float64 references, written with loops.


def ref_dynamic(rates, window):
    new = []
    for k in range(len(rates)):
        mean = sum(window[t][k] for t in range(len(window))) / len(window)
        new.append(rates[k] * window[-1][k] / mean if mean > 0 else rates[k])
    return np.array(new)


def ref_sgd(params, grads_per_step, rate, momentum, weight_decay):
    """torch-style SGD: d = g + wd * p; buf = momentum * buf + d; p -= rate * buf."""
    p, buf = params.copy(), np.zeros_like(params)
    for g in grads_per_step:
        buf = momentum * buf + g + weight_decay * p
        p = p - rate * buf
    return p


def ref_adam(params, grads_per_step, rate, b1=0.9, b2=0.999, eps=1e-8):
    p, m, v = params.copy(), np.zeros_like(params), np.zeros_like(params)
    for t, g in enumerate(grads_per_step, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - rate * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


class DynamicRatesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_reference(self):
        with jax.enable_x64(True):
            rng = np.random.default_rng(0)
            for history in (1, 3, 5):
                rates = rng.uniform(1e-3, 1e-1, size=3)
                window = rng.uniform(0.2, 0.9, size=(history, 3))
                out = self.variant(mslr.dynamic_rates)(jnp.asarray(rates), jnp.asarray(window))
                np.testing.assert_allclose(out, ref_dynamic(rates, window), rtol=1e-12)

    def test_improving_speeds_up_declining_slows_down_flat_keeps(self):
        rates = jnp.array([0.1, 0.1, 0.1])
        window = jnp.array([[0.5, 0.8, 0.6], [0.6, 0.7, 0.6], [0.7, 0.6, 0.6]])
        out = np.asarray(mslr.dynamic_rates(rates, window))
        self.assertGreater(out[0], 0.1)
        self.assertLess(out[1], 0.1)
        np.testing.assert_allclose(out[2], 0.1, rtol=1e-6)
        # 0.7 / mean(0.5, 0.6, 0.7) = 7 / 6.
        np.testing.assert_allclose(out[0], 0.1 * 7 / 6, rtol=1e-6)

    def test_a_modality_never_right_keeps_its_rate(self):
        out = mslr.dynamic_rates(jnp.array([0.1, 0.2]), jnp.array([[0.0, 0.5], [0.0, 0.5]]))
        np.testing.assert_allclose(out, [0.1, 0.2], rtol=1e-6)
        self.assertTrue(np.all(np.isfinite(out)))

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match=r"rates must be \[modalities\] and window \[epochs, modalities\], got"):
            mslr.dynamic_rates(jnp.ones(3), jnp.ones((2, 2)))
        with pytest.raises(ValueError, match=r"window must hold at least one epoch, got shape \(0, 2\)"):
            mslr.dynamic_rates(jnp.ones(2), jnp.ones((0, 2)))


def toy_problem(seed=0, steps_count=4):
    rng = np.random.default_rng(seed)
    params = {"branches": {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=(4,))}}
    grads = [{"branches": {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=(4,))}} for _ in range(steps_count)]
    return params, grads


def run_chain(tx, params, grads, rates):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params, rates=rates)
        params = optax.apply_updates(params, updates)
    return params


class ScaleByModalityRateTest(chex.TestCase):
    def test_sgd_with_momentum_and_decay_runs_each_branch_at_its_rate(self):
        with jax.enable_x64(True):
            params, grads = toy_problem()
            base, rates = 0.05, jnp.array([0.01, 0.2])
            tx = optax.chain(
                optax.add_decayed_weights(1e-2), optax.sgd(base, momentum=0.9), mslr.scale_by_modality_rate(base)
            )
            out = run_chain(tx, params, grads, rates)
            for i, name in enumerate(("a", "b")):
                expected = ref_sgd(
                    params["branches"][name], [g["branches"][name] for g in grads], float(rates[i]), 0.9, 1e-2
                )
                np.testing.assert_allclose(out["branches"][name], expected, rtol=1e-10)

    def test_adam_runs_each_branch_at_its_rate(self):
        with jax.enable_x64(True):
            params, grads = toy_problem(1)
            base, rates = 1e-3, jnp.array([3e-3, 1e-4])
            tx = optax.chain(optax.adam(base), mslr.scale_by_modality_rate(base))
            out = run_chain(tx, params, grads, rates)
            for i, name in enumerate(("a", "b")):
                expected = ref_adam(params["branches"][name], [g["branches"][name] for g in grads], float(rates[i]))
                np.testing.assert_allclose(out["branches"][name], expected, rtol=1e-9)

    @chex.variants(with_jit=True, without_jit=True)
    def test_scales_updates_by_rate_over_base(self):
        params, grads = jax.tree.map(lambda a: a.astype(np.float32), toy_problem(2, steps_count=1))
        tx = mslr.scale_by_modality_rate(0.5)
        update = self.variant(lambda u, r: tx.update(u, tx.init(params), rates=r)[0])
        out = update(grads[0], jnp.array([1.0, 0.25]))
        np.testing.assert_allclose(out["branches"]["a"], 2.0 * grads[0]["branches"]["a"], rtol=1e-6)
        np.testing.assert_allclose(out["branches"]["b"], 0.5 * grads[0]["branches"]["b"], rtol=1e-6)

    def test_bad_arguments_raise(self):
        with pytest.raises(ValueError, match=r"base_rate must be a positive finite number, got 0.0"):
            mslr.scale_by_modality_rate(0.0)
        params, grads = toy_problem()
        tx = mslr.scale_by_modality_rate(0.1)
        with pytest.raises(ValueError, match=r"rates must be \[2\] \(one per branch \['a', 'b'\]\), got \(3,\)"):
            tx.update(grads[0], tx.init(params), rates=jnp.ones(3))


class OptionsTest(chex.TestCase):
    def test_rates_from_the_command_line_become_numbers(self):
        options = mslr.MSLROptions(learning_rates={"fac": "0.01", "mor": 0.1})
        self.assertEqual(options.learning_rates, {"fac": 0.01, "mor": 0.1})

    def test_bad_values_raise(self):
        with pytest.raises(
            ValueError, match=r"mslr.learning_rates\['fac'\] must be a positive finite number, got '-1'"
        ):
            mslr.MSLROptions(learning_rates={"fac": "-1"})
        with pytest.raises(ValueError, match=r"learning_rates\['mor'\] must be a positive finite number, got 'x'"):
            mslr.MSLROptions(learning_rates={"mor": "x"})
        with pytest.raises(ValueError, match=r"mslr.strategy must be one of \['keep', 'dynamic'\], got 'smooth'"):
            mslr.MSLROptions(strategy="smooth")
        with pytest.raises(ValueError, match=r"mslr.history_length must be >= 1"):
            mslr.MSLROptions(history_length=0)


# End to end on mfeat's three views, small.


def config(epochs, *overrides):
    return small_config("mslr", epochs, *overrides)


def test_unknown_modality_in_rates_raises():
    with pytest.raises(ValueError, match=r"mslr.learning_rates names \['pix'\], not modalities of this run"):
        mslr.MSLRMethod(config(1, "mslr.learning_rates=pix=0.1"), dataset().splits["train"], 10)


def test_keep_rates_are_the_given_ones_in_branch_order_and_never_change():
    method = mslr.MSLRMethod(config(2, "mslr.learning_rates=zer=0.2,fac=0.03"), dataset().splits["train"], 10)
    assert method.branch_names == ("fac", "mor", "zer")
    state = method.init()
    np.testing.assert_allclose(state["rates"], [0.03, 0.01, 0.2])  # mor: optimizer.learning_rate.
    state, _ = loop.run_phase(method, state, 0)
    np.testing.assert_allclose(state["rates"], [0.03, 0.01, 0.2])
    assert "window" not in state and len(method.train_rows) == 1200  # keep trains on the whole split.


def test_each_branch_steps_at_its_own_rate():
    method = mslr.MSLRMethod(config(1, "optimizer.momentum=0"), dataset().splits["train"], 10)
    state = method.init()
    np.testing.assert_allclose(state["rates"], [0.01, 0.01, 0.01])
    batch = jax.tree.map(lambda a: a[0], feed.host_chunk(method.inputs, method.labels, method.draws(0), 0, 1))
    carry = (state["params"], state["model_state"], state["opt_state"])
    (same, _, _), _ = method.train_step(jnp.array([0.01, 0.01, 0.01]), carry, batch)
    (faster, _, _), _ = method.train_step(jnp.array([0.01, 0.03, 0.01]), carry, batch)
    delta = lambda p, m: jax.tree.map(lambda a, b: a - b, p["branches"][m], state["params"]["branches"][m])  # noqa: E731
    # Parameter differences in float32: exact to about 1e-7 on steps of about 1e-4.
    tripled = jax.tree.map(lambda d: 3 * d, delta(same, "mor"))
    chex.assert_trees_all_close(delta(faster, "mor"), tripled, rtol=1e-4, atol=2e-7)
    chex.assert_trees_all_close(delta(faster, "fac"), delta(same, "fac"), atol=2e-7)
    # The loss is the cross-entropy of the summed logits.
    _, loss = method.train_step(jnp.array([0.01, 0.01, 0.01]), carry, batch)
    logits = steps.apply_model(method.graphdef, state["params"], state["model_state"], batch.inputs, train=True)[0][1]
    summed = sum(np.asarray(logits[m], np.float64) for m in THREE_VIEWS)
    top = summed.max(1, keepdims=True)
    log_p = summed - top - np.log(np.exp(summed - top).sum(1, keepdims=True))
    np.testing.assert_allclose(float(loss), -np.mean(log_p[np.arange(len(batch.labels)), batch.labels]), rtol=1e-5)


def test_keep_trains_three_modalities():
    results = train(config(2, "mslr.learning_rates=fac=0.01,mor=0.05,zer=0.02"), dataset())
    assert set(results["test"]) == {"joint"}
    assert results["finished"] and len(results["history"]) == 2
    assert results["test"]["joint"]["accuracy"] > 0.6


def test_dynamic_rescales_by_the_held_out_window():
    method = mslr.MSLRMethod(config(2, "mslr.strategy=dynamic", "mslr.history_length=2"), dataset().splits["train"], 10)
    assert len(method.holdout_rows) == 120 and len(method.train_rows) == 1080
    state = method.init()
    state, _ = loop.run_phase(method, state, 0)
    np.testing.assert_allclose(state["rates"], method.initial_rates)  # Not yet a full window.
    window_first = np.asarray(state["window"][0])
    np.testing.assert_allclose(window_first, method.holdout_accuracies(state["params"], state["model_state"]))
    state, _ = loop.run_phase(method, state, 1)
    np.testing.assert_allclose(
        state["rates"], ref_dynamic(method.initial_rates, np.asarray(state["window"])), rtol=1e-6
    )
    assert not np.allclose(state["rates"], method.initial_rates)
