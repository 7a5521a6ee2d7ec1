"""experiments.analyses: filter-normalised directions, loss surfaces, head spectra, the report and the command."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import analyses
from mie_jax.analysis import landscape, spectra

# The smallest training that still runs every phase: one outer iteration of one epoch, a narrow model.
TINY = [
    "--seeds",
    "1",
    "--values",
    "1",
    "--grid",
    "3",
    "--methods",
    "mie",
    "--set",
    "train.outer_iterations=1",
    "--set",
    "train.phase_epochs=1",
    "--set",
    "model.dim=16",
    "--set",
    "model.encoder_hidden=32",
    "--set",
    "train.batch_size=100",
]


def random_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=3), jnp.float32),
        },
        "conv": {
            "kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=4), jnp.float32),
        },
        "norm": {"scale": jnp.asarray(rng.normal(size=4), jnp.float32)},
    }


def test_filter_normalized_direction_gives_every_filter_its_weight_norm():
    params = random_params()
    direction = landscape.filter_normalized_direction(params, jax.random.key(0))
    assert jax.tree.map(lambda d: (d.shape, d.dtype), direction) == jax.tree.map(lambda p: (p.shape, p.dtype), params)
    # Dense [in, out]: a filter is one output column.
    for o in range(3):
        np.testing.assert_allclose(
            np.linalg.norm(direction["dense"]["kernel"][:, o]),
            np.linalg.norm(params["dense"]["kernel"][:, o]),
            rtol=1e-5,
        )
    # Convolution [h, w, in, out]: a filter is one output channel.
    for o in range(4):
        np.testing.assert_allclose(
            np.linalg.norm(direction["conv"]["kernel"][..., o]),
            np.linalg.norm(params["conv"]["kernel"][..., o]),
            rtol=1e-5,
        )
    # Random, not the weights themselves: each filter points elsewhere.
    cosine = (
        np.sum(direction["dense"]["kernel"] * params["dense"]["kernel"], axis=0)
        / np.linalg.norm(params["dense"]["kernel"], axis=0) ** 2
    )
    assert np.all(np.abs(cosine) < 0.99)


def test_filter_normalized_direction_leaves_biases_and_other_vectors_still():
    direction = landscape.filter_normalized_direction(random_params(), jax.random.key(1))
    for leaf in (direction["dense"]["bias"], direction["conv"]["bias"], direction["norm"]["scale"]):
        np.testing.assert_array_equal(leaf, 0.0)


def test_filter_normalized_direction_depends_on_the_key_only_through_the_gaussian():
    params = random_params()
    first = landscape.filter_normalized_direction(params, jax.random.key(0))
    again = landscape.filter_normalized_direction(params, jax.random.key(0))
    other = landscape.filter_normalized_direction(params, jax.random.key(2))
    np.testing.assert_array_equal(first["conv"]["kernel"], again["conv"]["kernel"])
    assert not np.allclose(first["conv"]["kernel"], other["conv"]["kernel"])


def test_loss_surface_at_the_origin_is_the_loss_at_the_params():
    params = random_params()
    d1 = landscape.filter_normalized_direction(params, jax.random.key(0))
    d2 = landscape.filter_normalized_direction(params, jax.random.key(1))

    def loss_fn(p):  # Not quadratic: the origin must be exact for any loss.
        return jnp.sum(jnp.tanh(p["dense"]["kernel"])) + jnp.sum(jnp.cos(p["conv"]["kernel"]))

    surface = landscape.loss_surface(loss_fn, params, d1, d2, [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(surface[1, 1], float(loss_fn(params)), rtol=1e-6)


def test_loss_surface_is_exact_for_a_quadratic_loss():
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    d1 = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    d2 = {"w": rng.normal(size=(4, 3)), "b": np.zeros(3)}
    center = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grid = [-1.0, -0.25, 0.0, 0.5, 1.0]  # Uneven, so rows and columns cannot be confused with a flipped grid.

    def loss_fn(p):
        return sum(jnp.sum((p[k] - center[k]) ** 2) for k in p)

    as_float32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)  # noqa: E731
    surface = landscape.loss_surface(loss_fn, as_float32(params), as_float32(d1), as_float32(d2), grid)

    # ||p + a d1 + b d2 - c||^2 expanded, in float64.
    def dot(x, y):
        return sum(float(np.sum(x[k] * y[k])) for k in x)

    offset = {k: params[k] - center[k] for k in params}
    expected = np.array(
        [
            [
                dot(offset, offset)
                + 2 * a * dot(offset, d1)
                + 2 * b * dot(offset, d2)
                + a * a * dot(d1, d1)
                + b * b * dot(d2, d2)
                + 2 * a * b * dot(d1, d2)
                for b in grid
            ]
            for a in grid
        ]
    )
    assert surface.shape == (5, 5)
    np.testing.assert_allclose(surface, expected, rtol=1e-5)


def test_surface_summary_measures_the_rise_around_the_center():
    grid = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    surface = 1.0 + grid[:, None] ** 2 + grid[None, :] ** 2
    summary = landscape.surface_summary(surface, grid)
    assert summary["center_loss"] == pytest.approx(1.0)
    assert summary["max_rise"] == pytest.approx(2.0)
    assert summary["mean_rise"] == pytest.approx(2 * np.mean(grid**2))
    assert summary["inner_mean_rise"] == pytest.approx(2 * np.mean([0.25, 0.0, 0.25]))


def test_head_singular_values_equal_numpy_svd_of_each_kernel():
    rng = np.random.default_rng(4)
    shapes = {"fc1": (16, 24), "fc2": (24, 8), "fc3": (8, 10)}
    head = {
        layer: {"kernel": jnp.asarray(rng.normal(size=shape), jnp.float32), "bias": jnp.zeros(shape[1])}
        for layer, shape in shapes.items()
    }
    params = {"encoder": {"out": {"kernel": jnp.ones((3, 16))}}, "head": head}
    values = spectra.head_singular_values(params)
    assert set(values) == set(shapes)
    for layer, shape in shapes.items():
        expected = np.linalg.svd(np.asarray(head[layer]["kernel"], np.float64), compute_uv=False)
        assert values[layer].shape == (min(shape),)
        np.testing.assert_allclose(values[layer], expected, rtol=1e-5)


def test_head_relative_change_is_the_frobenius_distance_over_the_initial_norm():
    initial = {"head": {layer: {"kernel": jnp.ones((4, 3))} for layer in ("fc1", "fc2", "fc3")}}
    trained = {
        "head": {
            "fc1": {"kernel": jnp.ones((4, 3))},
            "fc2": {"kernel": 3 * jnp.ones((4, 3))},
            "fc3": {"kernel": jnp.ones((4, 3)).at[0, 0].set(1 + np.sqrt(12))},
        }
    }
    assert spectra.head_relative_change(trained, initial) == pytest.approx({"fc1": 0.0, "fc2": 2.0, "fc3": 1.0})


def test_spectrum_summary_of_a_known_spectrum():
    summary = spectra.spectrum_summary([1.0, 4.0, 0.5, 2.0, 1.0, 3.0])
    assert summary["top"] == [4.0, 3.0, 2.0, 1.0, 1.0]
    assert summary["largest"] == 4.0
    assert summary["condition_number"] == pytest.approx(8.0)
    assert summary["top_energy"] == pytest.approx(31.0 / 31.25)


def test_pick_values_spreads_over_the_sweep_and_one_value_is_the_default():
    assert analyses.pick_values(analyses.TAU_VALUES, 5) == list(analyses.TAU_VALUES)
    assert analyses.pick_values(analyses.TAU_VALUES, 3) == [0.1, 0.4, 1.6]
    assert analyses.pick_values(analyses.TAU_VALUES, 1) == [0.4]
    assert analyses.pick_values(analyses.RHO_VALUES, 1) == [0.05]
    with pytest.raises(ValueError, match="--values must be between 1 and 5"):
        analyses.pick_values(analyses.TAU_VALUES, 6)


def sensitivity_results(tau_average, rho_average):
    """Two seeds per value, ±0.005 around the given means."""
    sweeps = {"tau": [0.1, 0.4, 1.6], "rho": [0.0, 0.05, 0.2]}
    means = {"tau": tau_average, "rho": rho_average}
    runs = [
        {
            "parameter": parameter,
            "value": value,
            "seed": seed,
            "selected_phase": 0,
            "accuracy": {"fac": 0.97, "mor": 0.74, "average": mean + (0.005 if seed else -0.005), "weighted": 0.9},
        }
        for parameter, values in sweeps.items()
        for value, mean in zip(values, means[parameter])
        for seed in range(2)
    ]
    return {**sweeps, "defaults": {"tau": 0.4, "rho": 0.05}, "runs": runs}


def test_smoothness_compares_changes_with_the_spread_over_seeds():
    rising = [0.90, 0.91, 0.92]
    assert analyses.smoothness(rising, [0.012] * 3) == "smooth"  # Steps of 0.01, range 0.02.
    assert analyses.smoothness(rising, [0.03] * 3) == "insensitive"
    assert analyses.smoothness([0.90, 0.95, 0.90], [0.01] * 3) == "not smooth"


def test_sensitivity_section_judges_smoothness_against_the_spread_over_seeds():
    text = analyses.sensitivity_section(sensitivity_results((0.980, 0.982, 0.979), (0.98, 0.95, 0.98)), seeds=2)
    assert "| 0.4 | 0.9820 ± 0.0050 | 0.9700 ± 0.0000 | 0.7400 ± 0.0000 |" in text
    assert "largest change between neighbouring values 0.0300 (rho=0.0 to 0.05)" in text
    assert "for average it holds in tau but not in rho; for fac it holds in tau and rho" in text


def landscape_results(no_sam_curvature):
    """MIE's surfaces rise as a^2 + b^2 (plus a seed offset); MIE w/o SAM's with the given curvature."""
    grid = np.linspace(-1, 1, 3)
    bowl = grid[:, None] ** 2 + grid[None, :] ** 2
    surfaces = {
        name: {m: [(curvature + 0.01 * seed) * bowl + 0.1 for seed in range(2)] for m in ("fac", "mor")}
        for name, curvature in (("mie", 1.0), ("mie_no_sam", no_sam_curvature))
    }
    return {
        "grid": grid.tolist(),
        "surfaces": surfaces,
        "test_accuracy": {name: {m: [0.9, 0.9] for m in ("fac", "mor")} for name in surfaces},
    }


def test_landscape_section_says_whether_mie_is_flatter_than_without_sam():
    assert "the claim holds." in analyses.landscape_section(landscape_results(2.0), seeds=2)
    assert "the claim does not hold." in analyses.landscape_section(landscape_results(0.5), seeds=2)
    within_noise = analyses.landscape_section(landscape_results(1.001), seeds=2)
    assert "the claim holds in direction, but not beyond the spread over seeds everywhere." in within_noise


def test_spectra_section_marks_what_sam_changes_beyond_the_spread_over_seeds():
    base = [4.0, 3.0, 2.0, 1.0, 1.0, 0.5]
    seeds = lambda values: [list(values), [v * 1.01 for v in values]]  # noqa: E731
    sharper_fc3 = [8.0, *base[1:]]
    spectra = {
        "singular_values": {
            "mie": {"fac": {"fc1": seeds(base), "fc2": seeds(base), "fc3": seeds(sharper_fc3)}},
            "mie_no_sam": {"fac": {layer: seeds(base) for layer in ("fc1", "fc2", "fc3")}},
        },
        "initial_singular_values": {"fac": {layer: seeds(base) for layer in ("fc1", "fc2", "fc3")}},
        "relative_change": {
            name: {"fac": {layer: [0.1, 0.3] for layer in ("fc1", "fc2", "fc3")}} for name in ("mie", "mie_no_sam")
        },
        "shapes": {"fc1": [6, 8], "fc2": [8, 6], "fc3": [6, 10]},
    }
    text = analyses.spectra_section(spectra, seeds=2)
    assert "| fac | fc3 | init | 4.020, 3.015, 2.010, 1.005, 1.005 |" in text
    assert "fc3 largest singular value +100.0%*, condition number +100.0%*" in text
    assert "fc1 largest singular value +0.0%, condition number +0.0%, top-5 energy +0.000;" in text
    assert (
        "changes the largest singular value in 1 of 3 kernels (fac fc3); the condition number in 1 of 3 "
        "kernels (fac fc3)"
    ) in text
    assert "moves MIE's head kernels by 20% to 20% of their initial Frobenius norm" in text


def test_cli_writes_markdown_json_and_every_plot(tmp_path, capsys):
    assert analyses.main([*TINY, "--out", str(tmp_path)]) == 0
    for name in (
        "ANALYSES.md",
        "analyses.json",
        "sensitivity_tau.png",
        "sensitivity_rho.png",
        "landscape.png",
        "spectra.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    markdown = (tmp_path / "ANALYSES.md").read_text()
    for title in (
        "## Figure 4: sensitivity to tau and rho",
        "## Figure 5: loss landscapes",
        "## Table 5: singular values of the head layers",
        "![loss landscapes](landscape.png)",
    ):
        assert title in markdown
    stored = json.loads((tmp_path / "analyses.json").read_text())
    assert np.asarray(stored["landscape"]["surfaces"]["mie"]["mor"][0]).shape == (3, 3)
    assert [len(stored["spectra"]["singular_values"]["mie"]["fac"][layer][0]) for layer in ("fc1", "fc2", "fc3")] == [
        16,
        64,
        10,
    ]
    assert 0 < stored["spectra"]["relative_change"]["mie"]["mor"]["fc3"][0] < 10
    # One value per sweep is the default point, which both sweeps share: one training run.
    assert [(r["parameter"], r["value"]) for r in stored["sensitivity"]["runs"]] == [("tau", 0.4), ("rho", 0.05)]
    assert "sensitivity: tau=0.4 rho=0.05 seed 0" in capsys.readouterr().err


def test_cli_refuses_a_grid_without_the_origin(tmp_path, capsys):
    assert analyses.main(["--grid", "4", "--out", str(tmp_path)]) == 2
    assert "--grid must be odd" in capsys.readouterr().err


def test_cli_refuses_a_method_without_per_modality_classifiers(tmp_path, capsys):
    assert analyses.main(["--methods", "mie,joint", "--out", str(tmp_path)]) == 2
    assert "alternating methods" in capsys.readouterr().err
