"""The training driver and the methods, end to end on a small real dataset (mfeat)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

import mie_jax
from mie_jax.data.registry import load_dataset
from mie_jax.train import checkpoint, make_config, registry, steps, train
from mie_jax.train.methods import alternating
from mie_jax.train.trainer import NonFiniteLossError
from tests import references

THREE_VIEWS = ("fac", "mor", "zer")
SMALL = {
    "modalities": THREE_VIEWS,
    "model": {"dim": 16, "encoder_hidden": 32},
    "train": {"outer_iterations": 1, "phase_epochs": 1, "batch_size": 100},
}


@functools.lru_cache(maxsize=None)
def dataset(views=THREE_VIEWS):
    return load_dataset("mfeat", views)


def small_config(method="mie", *overrides, **top_level):
    """SMALL for ``method``, with ``"section.key=value"`` overrides and top-level keys (modalities=, variant=)."""
    return make_config(SMALL, overrides, method=method, **top_level)


@pytest.mark.parametrize("method", registry.names())
def test_every_method_trains_three_modalities_end_to_end(method):
    results = train(small_config(method, "train.outer_iterations=2"), dataset())
    per_modality = getattr(registry.get(method).build, "per_modality", True)
    expected_names = {*THREE_VIEWS, "average", "weighted"} if per_modality else {"joint"}
    assert set(results["test"]) == expected_names
    assert results["finished"] and len(results["history"]) == results["num_phases"]
    losses = [r["loss"] for r in results["history"]]
    assert all(np.isfinite(losses))
    # Every method learns: its loss falls. How well (and how fast: G-Blend's estimated weights may give
    # its fused head 2% of the loss in the first super-epoch, Greedy's re-balancing steps train one
    # branch at a time) is tested in each method's own file.
    assert losses[-1] < losses[0]


def test_joint_with_average_fusion_trains():
    results = train(small_config("joint", "joint.fusion=average", "train.outer_iterations=2"), dataset())
    assert results["test"]["joint"]["accuracy"] > 0.6


def test_alternation_trains_modality_j_in_phase_j_mod_m():
    results = train(small_config("unimodal", "train.outer_iterations=2"), dataset())
    assert [r["name"] for r in results["history"]] == list(THREE_VIEWS) * 2


def test_t_of_each_phase_comes_from_the_modality_trained_just_before():
    method = alternating.AlternatingMethod(small_config(), dataset().splits["train"], 10)
    state = method.init()
    rng = np.random.default_rng(0)
    state["covariance"] = {
        m: {
            layer: jnp.asarray(
                references.covariance([rng.normal(size=(12, c.shape[0])) for _ in range(4)]), jnp.float32
            )
            for layer, c in covs.items()
        }
        for m, covs in state["covariance"].items()
    }
    first = method._transforms(state, 0, "fac")
    np.testing.assert_array_equal(first["head"]["fc2"]["kernel"], np.eye(256))  # Algorithm 1 starts at I.
    for phase, (current, previous) in [(1, ("mor", "fac")), (2, ("zer", "mor")), (3, ("fac", "zer"))]:
        transforms = method._transforms(state, phase, current)
        for layer in ("fc1", "fc2", "fc3"):
            np.testing.assert_allclose(
                transforms["head"][layer]["kernel"],
                mie_jax.flat_transform(state["covariance"][previous][f"head/{layer}"], 0.4),
                atol=1e-6,
            )
        assert transforms["encoder"]["hidden"]["kernel"] is None
        assert transforms["head"]["fc1"]["bias"] is None


def test_covariance_pass_equals_eq5_over_batches_of_twelve():
    method = alternating.AlternatingMethod(small_config(), dataset().splits["train"], 10)
    state = method.init()
    params, model_state = state["params"]["mor"], state["model_state"]["mor"]
    inputs = method.inputs["mor"]
    covariance = method.covariance_passes["mor"](params, model_state, inputs, 12, group=4)
    (_, layer_inputs), _ = steps.apply_model(method.graphdefs["mor"], params, model_state, inputs, train=False)
    for layer in ("fc1", "fc2", "fc3"):
        features = np.asarray(layer_inputs[layer], np.float64)
        batches = [features[i : i + 12] for i in range(0, len(features), 12)]
        np.testing.assert_allclose(covariance[f"head/{layer}"], references.covariance(batches), rtol=1e-4, atol=1e-6)


def test_mie_with_rho_zero_and_t_identity_equals_plain_alternating_training():
    # tau so small that exp(-tau * x) rounds to 1: T = V V^T = I up to rounding.
    mie = train(small_config("mie", "sam.rho=0.0", "mie.tau=1e-30", "train.outer_iterations=2"), dataset())
    plain = train(small_config("unimodal", "train.outer_iterations=2"), dataset())
    for a, b in zip(mie["history"], plain["history"]):
        np.testing.assert_allclose(a["step_losses"], b["step_losses"], rtol=2e-4)
    # And the real method is not the plain one.
    real = train(small_config("mie", "train.outer_iterations=2"), dataset())
    assert not np.allclose(real["history"][-1]["step_losses"], plain["history"][-1]["step_losses"], rtol=1e-3)


def test_online_covariance_trains_without_the_extra_pass():
    results = train(small_config("mie", "mie.covariance=online", "train.outer_iterations=2"), dataset())
    assert results["test"]["average"]["accuracy"] > 0.6


@pytest.mark.parametrize("method", ["mie", "ogm_ge", "mla"])
def test_resume_equals_uninterrupted(tmp_path, method):
    config = small_config(method, "train.outer_iterations=2", variant="reference" if method == "mie" else "paper")
    whole = train(config, dataset())
    interrupted = train(config, dataset(), workdir=str(tmp_path), stop_after_phase=1)
    assert not interrupted["finished"]
    resumed = train(config, dataset(), workdir=str(tmp_path), resume=True)
    assert resumed["finished"]
    assert [r["step_losses"] for r in resumed["history"]] == [r["step_losses"] for r in whole["history"]]
    assert resumed["test"] == whole["test"]
    assert resumed["selected_phase"] == whole["selected_phase"]


def test_resume_with_another_config_fails_clearly(tmp_path):
    train(small_config("unimodal"), dataset(), workdir=str(tmp_path), stop_after_phase=1)
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"different config \(model\.dim: 16 -> 32\)"):
        train(small_config("unimodal", "model.dim=32"), dataset(), workdir=str(tmp_path), resume=True)


def test_non_finite_loss_stops_naming_phase_and_modality_and_keeps_last_checkpoint(tmp_path):
    config = small_config(
        "unimodal", "optimizer.learning_rate=1e12", "train.outer_iterations=2", "train.phase_epochs=3"
    )
    with pytest.raises(NonFiniteLossError, match=r"phase \d/6 \((fac|mor|zer)\), step \d+: loss is nan"):
        train(config, dataset(), workdir=str(tmp_path))
    saved = checkpoint.RunCheckpointer(str(tmp_path / "checkpoints"))
    latest = saved.latest_step()
    saved.close()
    assert latest is None or latest >= 1  # Only completed, finite phases were saved.


def test_reference_variant_selects_on_test_only_when_asked():
    assert small_config().train.select_on == "validation"
    results = train(small_config("unimodal", "train.select_on=test"), dataset())
    assert results["selected_on"] == "test"


def test_unknown_modality_is_named():
    with pytest.raises(ValueError, match=r"modalities \['pix'\] are not in dataset 'mfeat'"):
        train(small_config(modalities=("fac", "pix")), dataset(("fac", "mor")))


def test_skip_nonfinite_steps_trains_through_corrupt_rows_and_counts_them():
    clean = dataset(("fac", "mor"))
    inputs = {m: np.array(a) for m, a in clean.splits["train"].inputs.items()}
    inputs["fac"][:3] = np.nan  # Three corrupt training rows poison every batch they fall in.
    corrupt = clean._replace(splits={**clean.splits, "train": clean.splits["train"]._replace(inputs=inputs)})
    config = small_config("unimodal", "train.outer_iterations=2", "train.batch_size=50", modalities=("fac", "mor"))
    with pytest.raises(NonFiniteLossError, match=r"\(fac\), step \d+: loss is nan"):
        train(config, corrupt)
    results = train(
        small_config(
            "unimodal",
            "train.outer_iterations=2",
            "train.batch_size=50",
            "optimizer.skip_nonfinite_steps=5",
            modalities=("fac", "mor"),
        ),
        corrupt,
    )
    skipped = [r["nonfinite_steps"] for r in results["history"]]
    assert skipped[0] > 0 and skipped[1] == 0  # fac's batches with a corrupt row; mor is clean.
    assert results["test"]["fac"]["accuracy"] > 0.6


def test_outputs_that_overflow_while_every_bad_step_was_skipped_stop_naming_phase_and_cause():
    config = small_config(
        "unimodal", "optimizer.learning_rate=1e8", "optimizer.skip_nonfinite_steps=1000", modalities=("fac", "mor")
    )
    with pytest.raises(
        NonFiniteLossError,
        match=r"phase 1/2 \(fac\): the fac predictions hold non-finite values "
        r"after \d+ of 12 steps were skipped .* no checkpoint was written",
    ):
        train(config, dataset(("fac", "mor")))


def test_low_rank_t_trains_as_the_dense_t_within_its_bound():
    dense = train(small_config("mie", "train.outer_iterations=2"), dataset())
    low_rank = train(small_config("mie", "train.outer_iterations=2", "mie.rank=24", "mie.tol=1e-4"), dataset())
    for a, b in zip(dense["history"], low_rank["history"], strict=True):
        np.testing.assert_allclose(b["step_losses"], a["step_losses"], rtol=2e-3)
    # And the low-rank form is used: a rank too small to hold the damped modes changes the run.
    too_small = train(small_config("mie", "train.outer_iterations=2", "mie.rank=1"), dataset())
    assert not np.allclose(too_small["history"][-1]["step_losses"], dense["history"][-1]["step_losses"], rtol=1e-4)
