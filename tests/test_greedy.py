"""Specification of the ``greedy`` method (Wu et al., ICML 2022): its defining quantities, then training."""

import chex
import hypothesis
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mie_jax.train import feed, loop, steps, train
from mie_jax.train.methods import greedy
from tests.mfeat_small import THREE_VIEWS, dataset, small_config


speed_vectors = hnp.arrays(
    np.float64,
    hypothesis.strategies.integers(2, 5),
    elements=hypothesis.strategies.floats(-3.0, 3.0),
)


def reference_accuracy(logits, labels):
    correct = 0
    for row, label in zip(logits, labels):
        correct += int(np.argmax(row) == label)
    return correct / len(labels)


def reference_learning_speed(grad_leaves, param_leaves):
    grad_sq = 0.0
    param_sq = 0.0
    for g, p in zip(grad_leaves, param_leaves):
        for value in np.ravel(np.asarray(g, np.float64)):
            grad_sq += value * value
        for value in np.ravel(np.asarray(p, np.float64)):
            param_sq += value * value
    return grad_sq / param_sq


def reference_two_modality_rule(s0, s1, alpha):
    """The released code's rule, written out: d = s(m1|m0) - s(m0|m1); |d| > alpha re-balances m0 if d > 0."""
    d = s0 - s1
    if abs(d) > alpha:
        return True, 0 if d > 0 else 1
    return False, None


class ConditionalUtilizationRateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_float64_reference_from_predictions(self):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 4, size=40)
        with jax.enable_x64(True):
            accuracy, alone, expected = [], [], []
            for _ in range(3):
                fused = rng.normal(size=(40, 4))
                fused[np.arange(40)[:25], labels[:25]] += 5.0  # Most rows right with every modality.
                derived = rng.normal(size=(40, 4))
                derived[np.arange(40)[:12], labels[:12]] += 5.0
                a, a_alone = reference_accuracy(fused, labels), reference_accuracy(derived, labels)
                accuracy.append(a)
                alone.append(a_alone)
                expected.append((a - a_alone) / a)
            rates = self.variant(greedy.conditional_utilization_rates)(np.array(accuracy), np.array(alone))
            np.testing.assert_allclose(rates, expected, rtol=1e-12)

    def test_zero_when_the_other_modalities_add_nothing_one_when_alone_is_chance_zero(self):
        rates = greedy.conditional_utilization_rates(jnp.array([0.8, 0.5]), jnp.array([0.8, 0.0]))
        np.testing.assert_allclose(rates, [0.0, 1.0])

    def test_lengths_must_match(self):
        with pytest.raises(ValueError, match=r"accuracy_alone must be a vector \[2\], got shape \(3,\)"):
            greedy.conditional_utilization_rates(jnp.ones(2), jnp.ones(3))

    def test_accuracy_must_be_a_vector(self):
        with pytest.raises(ValueError, match=r"accuracy must be a vector \[m\], got shape \(\)"):
            greedy.conditional_utilization_rates(jnp.float32(1.0), jnp.ones(1))


class LearningSpeedTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_float64_reference(self):
        rng = np.random.default_rng(1)
        params = {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=(3,)), "scale": rng.normal(size=(2, 2))}
        grads = {name: 0.1 * rng.normal(size=leaf.shape) for name, leaf in params.items()}
        names = sorted(params)
        expected = reference_learning_speed([grads[n] for n in names], [params[n] for n in names])
        with jax.enable_x64(True):
            speed = self.variant(greedy.learning_speed)(grads, params)
        np.testing.assert_allclose(speed, expected, rtol=1e-12)

    @hypothesis.given(scale=hypothesis.strategies.floats(1e-2, 1e2), grad_scale=hypothesis.strategies.floats(1e-2, 1e2))
    def test_scales_as_grad_squared_over_params_squared(self, scale, grad_scale):
        params = {"w": np.array([3.0, 4.0])}
        grads = {"w": np.array([1.0, 0.0])}
        speed = greedy.learning_speed({"w": grad_scale * grads["w"]}, {"w": scale * params["w"]})
        np.testing.assert_allclose(speed, grad_scale**2 / (25.0 * scale**2), rtol=1e-5)

    def test_structures_must_match(self):
        with pytest.raises(ValueError, match=r"grads must have the structure of params"):
            greedy.learning_speed({"a": jnp.ones(2)}, {"b": jnp.ones(2)})

    def test_group_must_not_be_empty(self):
        with pytest.raises(ValueError, match=r"params must hold at least one array, got an empty tree"):
            greedy.learning_speed({}, {})


class ConditionalLearningSpeedTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_float64_reference(self):
        rng = np.random.default_rng(2)
        fusion_steps = rng.uniform(1e-4, 1e-2, size=(7, 3))
        branch_steps = rng.uniform(1e-4, 1e-2, size=(7, 3))
        expected = []
        for j in range(3):
            fusion_total = 0.0
            branch_total = 0.0
            for t in range(7):
                fusion_total += fusion_steps[t, j]
                branch_total += branch_steps[t, j]
            expected.append(np.log10(fusion_total / branch_total))
        with jax.enable_x64(True):
            speeds = self.variant(greedy.conditional_learning_speeds)(fusion_steps.sum(0), branch_steps.sum(0))
        np.testing.assert_allclose(speeds, expected, rtol=1e-12)

    def test_lengths_must_match(self):
        with pytest.raises(ValueError, match=r"branch_speed_sums must be a vector \[3\], got shape \(2,\)"):
            greedy.conditional_learning_speeds(jnp.ones(3), jnp.ones(2))


class RebalanceChoiceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @hypothesis.given(
        s0=hypothesis.strategies.floats(-2.0, 2.0),
        s1=hypothesis.strategies.floats(-2.0, 2.0),
        alpha=hypothesis.strategies.floats(0.0, 1.0),
    )
    def test_two_modalities_follow_the_papers_rule(self, s0, s1, alpha):
        hypothesis.assume(abs(abs(s0 - s1) - alpha) > 1e-6)  # Away from the float32 tie.
        rebalance, target = self.variant(greedy.rebalance_choice)(jnp.array([s0, s1], jnp.float32), alpha)
        expected_rebalance, expected_target = reference_two_modality_rule(s0, s1, alpha)
        self.assertEqual(bool(rebalance), expected_rebalance)
        if expected_rebalance:
            self.assertEqual(int(target), expected_target)

    @hypothesis.given(speeds=speed_vectors, alpha=hypothesis.strategies.floats(0.0, 2.0))
    def test_many_modalities_rebalance_the_fastest_when_the_spread_exceeds_alpha(self, speeds, alpha):
        hypothesis.assume(abs(speeds.max() - speeds.min() - alpha) > 1e-9)
        with jax.enable_x64(True):
            rebalance, target = greedy.rebalance_choice(speeds, alpha)
        spread, fastest = -np.inf, 0
        for i, a in enumerate(speeds):
            for b in speeds:
                spread = max(spread, a - b)
            if a > speeds[fastest]:
                fastest = i
        self.assertEqual(bool(rebalance), spread > alpha)
        self.assertEqual(int(target), fastest)

    def test_needs_two_modalities(self):
        with pytest.raises(ValueError, match=r"speeds must hold one entry per modality, at least 2, got 1"):
            greedy.rebalance_choice(jnp.ones(1), 0.01)


def reference_released_schedule(step_speeds, alpha, window, warmup_steps):
    """The released training callback, step by step: the kind of each step and the modality it re-balances."""
    fusion = [0.0, 0.0]
    branch = [0.0, 0.0]
    curation, caring, curation_step = False, 0, 0
    kinds = []
    for t, (fusion_speed, branch_speed) in enumerate(step_speeds):
        kinds.append(("rebalance", caring) if curation else ("normal", None))
        unlocked = t >= warmup_steps
        if unlocked and curation:
            curation_step += 1
            if curation_step == window:
                curation = False
            continue
        for j in range(2):
            fusion[j] += fusion_speed[j]
            branch[j] += branch_speed[j]
        d = np.log10(fusion[0] / branch[0]) - np.log10(fusion[1] / branch[1])
        if unlocked and abs(d) > alpha:
            curation, caring, curation_step = True, 0 if d > 0 else 1, 0
    return kinds


class AdvanceScheduleTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_the_released_callback(self):
        rng = np.random.default_rng(3)
        # Branch 1 learns faster from fusion at first, branch 0 (by far) later, so both targets occur.
        favoured = np.where(np.arange(60)[:, None] < 30, [1.0, 3.0], [300.0, 1.0])
        fusion = np.exp(rng.normal(scale=0.3, size=(60, 2))) * favoured
        branch = np.exp(rng.normal(scale=0.3, size=(60, 2)))
        expected = reference_released_schedule(list(zip(fusion, branch)), 0.05, 4, warmup_steps=6)

        def advance(schedule, f, b, unlocked):
            return greedy.advance_schedule(schedule, f, b, alpha=0.05, window=4, unlocked=unlocked)

        advance = self.variant(advance)
        schedule = greedy.BalanceSchedule.start(2)
        kinds = []
        with jax.enable_x64(True):
            for t in range(60):
                remaining = int(schedule.remaining)
                kinds.append(("rebalance", int(schedule.target)) if remaining else ("normal", None))
                schedule = advance(schedule, fusion[t], branch[t], jnp.asarray(t >= 6))
        self.assertEqual(kinds, expected)
        self.assertIn(("rebalance", 0), kinds)
        self.assertIn(("rebalance", 1), kinds)
        self.assertEqual(kinds[:6], [("normal", None)] * 6)

    def test_rebalancing_steps_leave_the_sums_alone(self):
        schedule = greedy.BalanceSchedule(jnp.ones(2), jnp.ones(2), jnp.int32(2), jnp.int32(1))
        after = greedy.advance_schedule(schedule, jnp.ones(2), jnp.ones(2), alpha=0.0, window=3, unlocked=True)
        np.testing.assert_array_equal(after.fusion_speed_sums, schedule.fusion_speed_sums)
        self.assertEqual(int(after.remaining), 1)
        self.assertEqual(int(after.target), 1)

    def test_window_must_be_positive(self):
        with pytest.raises(ValueError, match=r"window must be >= 1, got 0"):
            greedy.advance_schedule(
                greedy.BalanceSchedule.start(2), jnp.ones(2), jnp.ones(2), alpha=0.0, window=0, unlocked=True
            )

    def test_speeds_must_match_the_modalities(self):
        with pytest.raises(ValueError, match=r"fusion_speeds must be a vector \[2\], got shape \(3,\)"):
            greedy.advance_schedule(
                greedy.BalanceSchedule.start(2), jnp.ones(3), jnp.ones(2), alpha=0.0, window=1, unlocked=True
            )


class GreedyOptionsTest(chex.TestCase):
    def test_defaults_are_the_released_configuration(self):
        o = greedy.GreedyOptions()
        self.assertEqual((o.alpha, o.window, o.warmup_epochs, o.mmtm_ratio, o.update), (0.01, 5, 1, 4, "branch"))

    def test_bad_values_name_the_key(self):
        with pytest.raises(ValueError, match=r"greedy.window must be >= 1, got 0"):
            greedy.GreedyOptions(window=0)
        with pytest.raises(ValueError, match=r"greedy.update must be one of \['branch', 'all'\], got 'some'"):
            greedy.GreedyOptions(update="some")


# The method on mfeat's three views, small.


def config(epochs, *overrides):
    return small_config("greedy", epochs, *overrides, learning_rate=0.1)


def first_batch(method):
    return jax.tree.map(lambda a: a[0], feed.host_chunk(method.inputs, method.labels, method.draws(0), 0, 1))


def carry_of(state):
    return (state["params"], state["model_state"], state["opt_state"], state["balance"])


def reference_gates(params, features, names):
    """MMTM on vectors, in float64: sigmoid(W_j relu(W_s concat(z))) per modality."""
    squeeze = params["fusion"]["squeeze"]
    z = np.concatenate([np.asarray(features[n], np.float64) for n in names], axis=1)
    hidden = np.maximum(z @ np.asarray(squeeze["kernel"], np.float64) + np.asarray(squeeze["bias"], np.float64), 0)
    gates = {}
    for n in names:
        excite = params["fusion"]["excite"][n]
        pre = hidden @ np.asarray(excite["kernel"], np.float64) + np.asarray(excite["bias"], np.float64)
        gates[n] = 1.0 / (1.0 + np.exp(-pre))
    return gates


class GreedyModelTest(chex.TestCase):
    def test_gates_and_prediction_match_float64_reference(self):
        method = greedy.GreedyMethod(config(1), dataset().splits["train"], 10)
        state, batch = method.init(), first_batch(method)
        (joint, aux), _ = steps.apply_model(
            method.graphdef, state["params"], state["model_state"], batch.inputs, train=False
        )
        gates = reference_gates(state["params"], aux["features"], method.names)
        for n in method.names:
            np.testing.assert_allclose(aux["gates"][n], gates[n], rtol=1e-4, atol=1e-6)
        branch_mean = np.mean([np.asarray(aux["branches"][n]) for n in method.names], axis=0)
        np.testing.assert_allclose(joint, branch_mean, rtol=1e-5, atol=1e-6)

    def test_a_cut_branch_and_a_derived_unimodal_branch_ignore_the_other_modalities(self):
        method = greedy.GreedyMethod(config(1), dataset().splits["train"], 10)
        state, batch = method.init(), first_batch(method)
        shuffled = dict(batch.inputs)
        shuffled["fac"] = batch.inputs["fac"][::-1]  # Other rows of one other modality.
        means = {n: jnp.full((16,), 0.5) for n in method.names}
        cut = {n: (jnp.asarray(n == "zer"), means[n]) for n in method.names}
        # Cutting "zer" leaves "mor" fused; in the derived uni-modal networks no branch is.
        for kwargs, fused in (({"cut": cut}, True), ({"alone_means": means}, False)):
            outputs = [
                steps.apply_model(method.graphdef, state["params"], state["model_state"], x, train=False, **kwargs)
                for x in (batch.inputs, shuffled)
            ]
            (_, original), _ = outputs[0]
            (_, changed), _ = outputs[1]
            np.testing.assert_allclose(original["branches"]["zer"], changed["branches"]["zer"], rtol=1e-5)
            self.assertEqual(np.allclose(original["branches"]["mor"], changed["branches"]["mor"], rtol=1e-5), not fused)


class GreedyStepTest(chex.TestCase):
    def test_step_speeds_are_the_papers_groups(self):
        method = greedy.GreedyMethod(config(1), dataset().splits["train"], 10)
        state, batch = method.init(), first_batch(method)

        def loss_fn(p):
            (_, aux), _ = steps.apply_model(method.graphdef, p, state["model_state"], batch.inputs, train=True)
            return sum(
                jnp.mean(-jax.nn.log_softmax(aux["branches"][n])[jnp.arange(100), batch.labels]) for n in method.names
            )

        grads = jax.grad(loss_fn)(state["params"])
        fusion, branch = greedy._group_speeds(grads, state["params"], method.names)
        for j, n in enumerate(method.names):
            fusion_leaves = [state["params"]["fusion"]["squeeze"], state["params"]["fusion"]["excite"][n]]
            fusion_grads = [grads["fusion"]["squeeze"], grads["fusion"]["excite"][n]]
            branch_leaves = [state["params"]["encoders"][n], state["params"]["heads"][n]]
            branch_grads = [grads["encoders"][n], grads["heads"][n]]
            np.testing.assert_allclose(
                fusion[j],
                reference_learning_speed(jax.tree.leaves(fusion_grads), jax.tree.leaves(fusion_leaves)),
                rtol=1e-4,
            )
            np.testing.assert_allclose(
                branch[j],
                reference_learning_speed(jax.tree.leaves(branch_grads), jax.tree.leaves(branch_leaves)),
                rtol=1e-4,
            )
        # A normal unlocked step with alpha = 0 starts Q re-balancing steps for the fastest branch.
        method = greedy.GreedyMethod(config(1, "greedy.alpha=0"), dataset().splits["train"], 10)
        (_, _, _, balance), loss = method.train_step(jnp.asarray(True), carry_of(state), batch)
        np.testing.assert_allclose(loss, loss_fn(state["params"]), rtol=1e-5)  # The branches' losses, summed.
        schedule = greedy.BalanceSchedule(**balance["schedule"])
        np.testing.assert_allclose(schedule.fusion_speed_sums, fusion, rtol=1e-5)
        np.testing.assert_allclose(schedule.branch_speed_sums, branch, rtol=1e-5)
        self.assertEqual(int(schedule.remaining), 5)
        self.assertEqual(int(schedule.target), int(np.argmax(np.log10(np.asarray(fusion) / np.asarray(branch)))))
        # Locked (warm-up): the speeds are summed, no re-balancing starts.
        (_, _, _, balance), _ = method.train_step(jnp.asarray(False), carry_of(state), batch)
        self.assertEqual(int(balance["schedule"]["remaining"]), 0)

    def test_a_rebalancing_step_trains_only_the_target_branch(self):
        changed = lambda a, b: jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.any(x != y)), a, b))  # noqa: E731
        for update in ("branch", "all"):
            method = greedy.GreedyMethod(config(1, f"greedy.update={update}"), dataset().splits["train"], 10)
            state, batch = method.init(), first_batch(method)
            target = method.names.index("mor")
            balance = dict(state["balance"], schedule={**state["balance"]["schedule"], "remaining": jnp.int32(3)})
            balance["schedule"]["target"] = jnp.int32(target)
            # As after some steps: the initial zero gates would starve the cut branch's first layer.
            balance["gate_means"] = {n: jnp.full((16,), 0.5) for n in method.names}
            (params, _, _, after), _ = method.train_step(
                jnp.asarray(True), carry_of({**state, "balance": balance}), batch
            )
            before = state["params"]
            self.assertTrue(all(changed(params["encoders"]["mor"], before["encoders"]["mor"])))
            self.assertTrue(all(changed(params["heads"]["mor"], before["heads"]["mor"])))
            others_moved = any(changed(params["encoders"]["fac"], before["encoders"]["fac"])) or any(
                changed(params["fusion"]["squeeze"], before["fusion"]["squeeze"])
            )
            self.assertEqual(others_moved, update == "all")
            # Counting down; the speeds of a re-balancing step are not summed.
            self.assertEqual(int(after["schedule"]["remaining"]), 2)
            np.testing.assert_array_equal(after["rebalanced_steps"], np.eye(3, dtype=int)[target])
            np.testing.assert_array_equal(after["schedule"]["fusion_speed_sums"], np.zeros(3))


def test_warmup_is_normal_training_and_the_tolerance_changes_what_follows():
    never = greedy.GreedyMethod(config(2, "greedy.alpha=1000"), dataset().splits["train"], 10)
    default = greedy.GreedyMethod(config(2), dataset().splits["train"], 10)
    states = {}
    for name, method in (("never", never), ("default", default)):
        state = method.init()
        after_warmup, _ = loop.run_phase(method, state, 0)
        states[name] = (after_warmup, loop.run_phase(method, after_warmup, 1)[0])
    chex.assert_trees_all_close(states["never"][0]["params"], states["default"][0]["params"])
    assert int(states["default"][0]["balance"]["schedule"]["remaining"]) == 0
    np.testing.assert_array_equal(states["default"][0]["balance"]["rebalanced_steps"], np.zeros(3))
    assert int(np.sum(states["default"][1]["balance"]["rebalanced_steps"])) > 0
    np.testing.assert_array_equal(states["never"][1]["balance"]["rebalanced_steps"], np.zeros(3))
    assert not np.allclose(
        states["never"][1]["params"]["heads"]["fac"]["fc3"]["kernel"],
        states["default"][1]["params"]["heads"]["fac"]["fc3"]["kernel"],
    )
    rates = default.conditional_utilization(
        default.variables(states["default"][1]), dataset().splits["test"].inputs, dataset().splits["test"].labels
    )
    assert set(rates) == set(THREE_VIEWS) and all(np.isfinite(list(rates.values())))


def test_trains_three_modalities():
    results = train(config(3), dataset())
    assert set(results["test"]) == {"joint"}
    assert results["finished"] and len(results["history"]) == 3
    assert results["test"]["joint"]["accuracy"] > 0.6
