"""The paper's analyses on mfeat: sensitivity to tau and rho (Figure 4), per-modality loss
landscapes (Figure 5) and the singular values of the head layers (Table 5).

  python -m experiments.analyses                  # all three: 3 seeds, 5 values, 11x11 grid
  python -m experiments.analyses --quick          # 1 seed, 3 values, 5x5 grid, shorter training
  python -m experiments.analyses --only spectra   # one analysis; the others' stored numbers stay

Writes to ``--out`` (default docs/analyses/; reports/analyses-quick/ with --quick): ANALYSES.md,
analyses.json (every number behind it), sensitivity_tau.png, sensitivity_rho.png, landscape.png and spectra.png.

- Sensitivity: MIE trained with each tau (rho at its default) and each rho (tau at its
  default); the test accuracy of the model selected on validation, as experiments.report
  measures it.
- Landscape: the training loss of each modality's classifier around the weights its training
  ends with, along two filter-normalised random directions (Li et al., "Visualizing the Loss
  Landscape of Neural Nets", 2018), for MIE and its ablations.
- Spectra: the singular values of each modality's head kernels (fc1, fc2, fc3) of the same models,
  and at their initialisation.
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from experiments import configs, report
from experiments.xla_cache import enable_compilation_cache
from mie_jax.data.registry import MultimodalDataset, load_dataset
from mie_jax.analysis.landscape import (
    INNER_RADIUS,
    classifier_loss_fn,
    filter_normalized_direction,
    loss_surface,
    surface_summary,
)
from mie_jax.analysis.spectra import head_relative_change, head_singular_values, spectrum_summary
from mie_jax.models.head import HEAD_LAYERS
from mie_jax.train import TrainConfig, loop, make_config, train
from mie_jax.train.trainer import build_method, evaluate

DATASET = "mfeat"
ANALYSES = ("sensitivity", "landscape", "spectra")
# Each sweep's middle value is mfeat's default (tau 0.4, rho 0.05).
TAU_VALUES = (0.1, 0.2, 0.4, 0.8, 1.6)
RHO_VALUES = (0.0, 0.01, 0.05, 0.1, 0.2)
# SAM's effect is MIE against MIE w/o SAM (both modify gradients) and MIE w/o GM against
# unimodal (neither does); the quick run keeps the first pair only.
MODEL_METHODS = ("mie", "mie_no_sam", "mie_no_gm", "unimodal")
QUICK_MODEL_METHODS = ("mie", "mie_no_sam")
FULL = {"seeds": 3, "values": 5, "grid": 11}
QUICK = {"seeds": 1, "values": 3, "grid": 5}
JSON_NAME = "analyses.json"
MARKDOWN_NAME = "ANALYSES.md"


def pick_values(values: Sequence[float], count: int) -> list:
    """``count`` of ``values`` spread evenly from the first to the last; one value is the middle one.

    The sweeps' middle values are mfeat's defaults, so with one value the tau and rho
    sweeps share their single training run.

    Raises:
      ValueError: ``count`` is not between 1 and ``len(values)``.
    """
    if not 1 <= count <= len(values):
        raise ValueError(f"--values must be between 1 and {len(values)}, got {count}.")
    if count == 1:
        return [values[len(values) // 2]]
    return [values[int(i)] for i in np.round(np.linspace(0, len(values) - 1, count))]


# The swept parameters' config keys.
SWEPT_KEYS = {"tau": "mie.tau", "rho": "sam.rho"}


def run_config(method: str, seed: int, quick: bool, overrides: Sequence[str], **swept) -> TrainConfig:
    """mfeat's config for ``method`` and ``seed``; ``swept`` values (``tau``, ``rho``) win over ``--set`` ones."""
    base = configs.merge(configs.get_config(DATASET), report.QUICK if quick else {})
    config = make_config(base, overrides, method=method, seed=seed)
    return config.replace({SWEPT_KEYS[name]: value for name, value in swept.items()})


def load(config: TrainConfig) -> MultimodalDataset:
    """mfeat's views of ``config``, split by its seed."""
    return load_dataset(DATASET, config.modalities, config.load_options())


def train_to_end(config: TrainConfig, dataset: MultimodalDataset):
    """Trains every phase of an alternating method, without model selection.

    The landscape and the spectra describe the weights training ends with, as in
    Li et al.; :func:`mie_jax.train.train` returns only the selected model's metrics.

    Returns:
      ``(method, variables)``: the method (its graph definitions and predict
      functions) and its final parameters and model state.

    Raises:
      FloatingPointError: a phase produced a non-finite loss.
    """
    method = build_method(config, dataset)
    state = method.init()
    for phase in range(method.num_phases):
        state, losses = loop.run_phase(method, state, phase)
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"{config.method} seed {config.seed}: non-finite loss in phase {phase + 1}.")
    return method, method.variables(state)


class Progress:
    """Progress lines on stderr, with the time since the command started."""

    def __init__(self):
        self.start = time.time()

    def __call__(self, message: str) -> None:
        print(f"[{time.time() - self.start:6.1f} s] {message}", file=sys.stderr, flush=True)


def run_sensitivity(settings: Mapping, log: Progress) -> dict:
    """Trains MIE over the tau and rho values and seeds; the point both sweeps share trains once.

    Args:
      settings: :func:`make_settings`' result.
      log: where progress lines go.

    Returns:
      ``{"tau": [...], "rho": [...], "defaults": {...}, "runs": [records]}``, each record
      the parameter, its value, the seed, the selected phase and the test accuracy of
      every prediction (``average`` and each modality).
    """
    defaults = run_config("mie", 0, settings["quick"], settings["overrides"])
    sweeps = {"tau": pick_values(TAU_VALUES, settings["values"]), "rho": pick_values(RHO_VALUES, settings["values"])}
    points = [(name, value) for name, values in sweeps.items() for value in values]
    trained, runs = {}, []
    for seed in range(settings["seeds"]):
        dataset = load(run_config("mie", seed, settings["quick"], settings["overrides"]))
        for name, value in points:
            swept = {"tau": defaults.mie.tau, "rho": defaults.sam.rho, name: value}
            key = (swept["tau"], swept["rho"], seed)
            if key not in trained:
                results = train(run_config("mie", seed, settings["quick"], settings["overrides"], **swept), dataset)
                accuracy = {n: m["accuracy"] for n, m in results["test"].items()}
                trained[key] = {"selected_phase": results["selected_phase"], "accuracy": accuracy}
                log(
                    f"sensitivity: tau={swept['tau']} rho={swept['rho']} seed {seed}: test accuracy "
                    + ", ".join(f"{n} {a:.4f}" for n, a in accuracy.items())
                )
            runs.append({"parameter": name, "value": value, "seed": seed, **trained[key]})
    return {**sweeps, "defaults": {"tau": defaults.mie.tau, "rho": defaults.sam.rho}, "runs": runs}


class TrainedModel(NamedTuple):
    """One method trained to the end on one seed's data."""

    method: Any
    initial_params: Mapping[str, Any]
    variables: Mapping[str, Any]
    dataset: MultimodalDataset
    test_accuracy: Mapping[str, float]


def train_models(settings: Mapping, log: Progress) -> dict:
    """Each method of ``settings["methods"]`` trained to the end, per seed.

    Args:
      settings: :func:`make_settings`' result.
      log: where progress lines go.

    Returns:
      ``{(method name, seed): TrainedModel}``; ``test_accuracy`` has one entry per modality.
    """
    models = {}
    for seed in range(settings["seeds"]):
        for name in settings["methods"]:
            config = run_config(name, seed, settings["quick"], settings["overrides"])
            dataset = load(config)
            method, variables = train_to_end(config, dataset)
            test = evaluate(method, variables, dataset.splits["test"])
            models[name, seed] = TrainedModel(
                method, method.init()["params"], variables, dataset, {m: test[m]["accuracy"] for m in method.modalities}
            )
            log(
                f"models: {name} seed {seed} trained to the end: test accuracy "
                + ", ".join(f"{m} {a:.4f}" for m, a in models[name, seed].test_accuracy.items())
            )
    return models


def run_landscape(models: Mapping, grid_size: int, log: Progress) -> dict:
    """The training-loss surface of every modality's classifier of every model.

    Both directions of a modality are drawn from the same key for every method (the
    seed and the modality's index), so methods differ only in the weights that scale them.

    Args:
      models: :func:`train_models`' result.
      grid_size: points per direction, spread over [-1, 1].
      log: where progress lines go.

    Returns:
      ``{"grid": [...], "surfaces": {method: {modality: [surface per seed]}},
      "test_accuracy": {method: {modality: [per seed]}}}``.
    """
    grid = np.linspace(-1.0, 1.0, grid_size)
    surfaces, test_accuracy = {}, {}
    for (name, seed), model in models.items():
        train_split = model.dataset.splits["train"]
        for index, modality in enumerate(model.method.modalities):
            key1, key2 = jax.random.split(jax.random.fold_in(jax.random.key(seed), index))
            params = model.variables["params"][modality]
            loss_fn = classifier_loss_fn(
                model.method.predicts[modality],
                model.variables["model_state"][modality],
                train_split.inputs[modality],
                train_split.labels,
            )
            surface = loss_surface(
                loss_fn,
                params,
                filter_normalized_direction(params, key1),
                filter_normalized_direction(params, key2),
                grid,
            )
            surfaces.setdefault(name, {}).setdefault(modality, []).append(surface.tolist())
            test_accuracy.setdefault(name, {}).setdefault(modality, []).append(model.test_accuracy[modality])
            summary = surface_summary(surface, grid)
            log(
                f"landscape: {name} seed {seed} {modality}: centre loss {summary['center_loss']:.4f}, "
                f"mean rise {summary['mean_rise']:.4f}"
            )
    return {"grid": grid.tolist(), "surfaces": surfaces, "test_accuracy": test_accuracy}


def run_spectra(models: Mapping) -> dict:
    """The head kernels' singular values after training, at initialisation, and how far training moved them.

    Args:
      models: :func:`train_models`' result; it must hold ``mie``, whose initialisation is the reference.

    Returns:
      ``{"singular_values": {method: {modality: {layer: [values per seed]}}},
      "initial_singular_values": {modality: {layer: [values per seed]}},
      "relative_change": {method: {modality: {layer: [per seed]}}}, "shapes": {layer: [in, out]}}``.
    """
    spectra, initial, moved = {}, {}, {}
    for (name, _), model in models.items():
        for modality in model.method.modalities:
            params, initial_params = model.variables["params"][modality], model.initial_params[modality]
            for layer, values in head_singular_values(params).items():
                spectra.setdefault(name, {}).setdefault(modality, {}).setdefault(layer, []).append(values.tolist())
            for layer, change in head_relative_change(params, initial_params).items():
                moved.setdefault(name, {}).setdefault(modality, {}).setdefault(layer, []).append(change)
            # Every alternating method draws a seed's initialisation from nnx.Rngs(seed): one reference per seed.
            if name == "mie":
                for layer, values in head_singular_values(initial_params).items():
                    initial.setdefault(modality, {}).setdefault(layer, []).append(values.tolist())
    # Every encoder projects to the common Dim, so every modality's head has the same shapes.
    model = next(iter(models.values()))
    head = model.variables["params"][model.method.modalities[0]]["head"]
    return {
        "singular_values": spectra,
        "initial_singular_values": initial,
        "relative_change": moved,
        "shapes": {layer: list(head[layer]["kernel"].shape) for layer in HEAD_LAYERS},
    }


def sweep_statistics(sensitivity: Mapping, parameter: str) -> dict:
    """``{prediction: (means, stds)}`` over the seeds, one entry per value of ``parameter``."""
    runs = [r for r in sensitivity["runs"] if r["parameter"] == parameter]
    statistics = {}
    for prediction in runs[0]["accuracy"]:
        per_value = [[r["accuracy"][prediction] for r in runs if r["value"] == v] for v in sensitivity[parameter]]
        statistics[prediction] = (np.mean(per_value, axis=1), np.std(per_value, axis=1))
    return statistics


def sensitivity_predictions(sensitivity: Mapping) -> list:
    """The fused prediction, then each modality (the mfeat config's order)."""
    names = list(sensitivity["runs"][0]["accuracy"])
    return ["average", *(n for n in names if n not in ("average", "weighted"))]


def largest_step(means: Sequence[float]) -> tuple:
    """``(i, size)`` of the largest change ``|means[i + 1] - means[i]|``; ``(0, 0.0)`` for one value."""
    steps = np.abs(np.diff(means))
    if not len(steps):
        return 0, 0.0
    return int(np.argmax(steps)), float(np.max(steps))


# With one seed there is no spread to judge a difference by; the report says so instead.
ONE_SEED = "one seed: no spread over seeds to judge it by"


def beyond_seed_spread(ours: Sequence[float], theirs: Sequence[float]) -> bool:
    """Whether two per-seed samples' means differ by more than the larger of their standard deviations."""
    return abs(np.mean(ours) - np.mean(theirs)) > max(np.std(ours), np.std(theirs))


def versus_seed_spread(ours: Sequence[float], theirs: Sequence[float]) -> str:
    """``beyond`` or ``within one standard deviation over seeds``, or ``ONE_SEED``."""
    if len(ours) < 2:
        return ONE_SEED
    return f"{'beyond' if beyond_seed_spread(ours, theirs) else 'within'} one standard deviation over seeds"


def claim_status(holds: Sequence[bool], firm: Sequence[bool], seeds: int) -> str:
    """How a claim tested case by case fares: ``holds`` in direction, ``firm`` beyond the seeds' spread."""
    if seeds < 2:
        direction = "holds" if all(holds) else "holds only in part" if any(holds) else "does not hold"
        return f"{direction} in direction ({ONE_SEED})"
    if all(h and f for h, f in zip(holds, firm)):
        return "holds"
    if all(holds):
        return "holds in direction, but not beyond the spread over seeds everywhere"
    if any(h and f for h, f in zip(holds, firm)):
        return "holds only in part"
    return "does not hold"


def smoothness(means: Sequence[float], stds: Sequence[float]) -> str:
    """``insensitive`` (the whole range of ``means`` is within the largest of ``stds``), ``smooth`` (every
    change between neighbouring values is), or ``not smooth``."""
    spread = float(np.max(stds))
    if np.ptp(means) <= spread:
        return "insensitive"
    return "smooth" if largest_step(means)[1] <= spread else "not smooth"


def smoothness_sentence(
    parameter: str, values: Sequence[float], means: np.ndarray, stds: np.ndarray, prediction: str, seeds: int
) -> str:
    """The range of the mean accuracy over ``values``, its largest change between neighbouring values, and
    how that compares with the spread over seeds."""
    text = (
        f"{prediction}: mean accuracy {np.min(means):.4f} to {np.max(means):.4f} "
        f"(best at {parameter}={values[int(np.argmax(means))]})"
    )
    if len(values) < 2:
        return text + "."
    index, step = largest_step(means)
    text += (
        f"; largest change between neighbouring values {step:.4f} ({parameter}={values[index]} to {values[index + 1]})"
    )
    if seeds < 2:
        return text + f" ({ONE_SEED})."
    return text + f", largest standard deviation over seeds {np.max(stds):.4f}: **{smoothness(means, stds)}**."


def smoothness_verdict(prediction: str, states: Mapping[str, str]) -> str:
    """Where the smoothness claim holds for ``prediction``, given ``{parameter: smoothness(...)}``."""
    holds = [p for p, state in states.items() if state != "not smooth"]
    fails = [p for p, state in states.items() if state == "not smooth"]
    return f"for {prediction} it holds in {' and '.join(holds) or 'neither'}" + (
        f" but not in {' and '.join(fails)}" if holds and fails else ""
    )


def sensitivity_section(sensitivity: Mapping, seeds: int) -> str:
    """Figure 4's markdown: a table and a sentence per prediction for each parameter, then the verdict.

    Args:
      sensitivity: :func:`run_sensitivity`'s result.
      seeds: the seeds behind each mean.

    Returns:
      The section, starting with its ``##`` title.
    """
    predictions = sensitivity_predictions(sensitivity)
    lines = [
        "## Figure 4: sensitivity to tau and rho",
        "",
        "MIE trained with each value of one hyper-parameter while the other keeps its default "
        f"(tau={sensitivity['defaults']['tau']}, rho={sensitivity['defaults']['rho']}); test accuracy of the "
        f"model selected on the validation split, mean ± standard deviation over {seeds} seed(s). "
        "`average` is the fused prediction (the mean of the modalities' softmax outputs). "
        "rho=0 makes the SAM step an ordinary gradient step (MIE w/o SAM). A curve is called *smooth* when no "
        "change between neighbouring values exceeds the largest standard deviation over seeds, and "
        "*insensitive* when even its whole range does not.",
        "",
    ]
    states = {}
    for parameter in ("tau", "rho"):
        statistics = sweep_statistics(sensitivity, parameter)
        values = sensitivity[parameter]
        lines += [
            f"### {parameter}",
            "",
            f"![accuracy against {parameter}](sensitivity_{parameter}.png)",
            "",
            f"| {parameter} | " + " | ".join(predictions) + " |",
            "|---" * (len(predictions) + 1) + "|",
        ]
        lines += [
            f"| {value} | "
            + " | ".join(f"{statistics[p][0][i]:.4f} ± {statistics[p][1][i]:.4f}" for p in predictions)
            + " |"
            for i, value in enumerate(values)
        ]
        lines += [
            "",
            *(f"- {smoothness_sentence(parameter, values, *statistics[p], p, seeds)}" for p in predictions),
            "",
        ]
        states.update({(p, parameter): smoothness(*statistics[p]) for p in predictions})
    if seeds < 2 or len(sensitivity["tau"]) < 2:
        verdict = f"it is not judged ({ONE_SEED if seeds < 2 else 'one value per sweep'})"
    else:
        verdict = "; ".join(smoothness_verdict(p, {q: states[p, q] for q in ("tau", "rho")}) for p in predictions)
    lines += [
        "**The paper against mfeat.** The paper's Figure 4 shows MIE's accuracy changing smoothly with tau "
        f"and rho. Here {verdict}.",
        "",
    ]
    return "\n".join(lines)


def landscape_summaries(landscape: Mapping) -> dict:
    """``{method: {modality: {statistic: per-seed values}}}`` of :func:`surface_summary`."""
    summaries = {}
    for name, by_modality in landscape["surfaces"].items():
        for modality, surfaces in by_modality.items():
            per_seed = [surface_summary(np.asarray(s), landscape["grid"]) for s in surfaces]
            summaries.setdefault(name, {})[modality] = {k: [s[k] for s in per_seed] for k in per_seed[0]}
    return summaries


def landscape_section(landscape: Mapping, seeds: int) -> str:
    """Figure 5's markdown: the surfaces' statistics per method and modality, comparisons with MIE, the verdict.

    Args:
      landscape: :func:`run_landscape`'s result.
      seeds: the seeds behind each mean.

    Returns:
      The section, starting with its ``##`` title.
    """
    summaries = landscape_summaries(landscape)
    methods = list(summaries)
    modalities = list(summaries[methods[0]])
    grid = landscape["grid"]
    lines = [
        "## Figure 5: loss landscapes",
        "",
        f"Training loss (cross-entropy on the whole training split) of each modality's classifier at "
        f"`w + a d1 + b d2` over a {len(grid)}x{len(grid)} grid of `a, b` in [-1, 1], where `w` are the weights "
        "at the end of training (no model selection) and `d1, d2` are Gaussian directions, filter-normalised "
        "(every output unit's column of every kernel rescaled to that column's norm in `w`; biases not moved; "
        "Li et al. 2018). A modality's directions are drawn from the same key for every method. The plot shows "
        f"seed 0; the table gives mean ± standard deviation over {seeds} seed(s) of the loss at `w`, its rise "
        f"above that averaged over the grid and over the inner points (|a|, |b| <= {INNER_RADIUS}), its largest "
        "rise, and the test accuracy of the same weights. A flatter minimum rises less.",
        "",
        "![loss landscapes](landscape.png)",
        "",
        "| method | modality | loss at w | mean rise | mean rise, inner | max rise | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        for modality in modalities:
            s = summaries[name][modality]
            lines.append(
                f"| {name} | {modality} | "
                + " | ".join(report.mean_std(s[k]) for k in ("center_loss", "mean_rise", "inner_mean_rise", "max_rise"))
                + f" | {report.mean_std(landscape['test_accuracy'][name][modality])} |"
            )
    lines.append("")
    for other in (m for m in methods if m != "mie"):
        for modality in modalities:
            ours, theirs = summaries["mie"][modality]["mean_rise"], summaries[other][modality]["mean_rise"]
            lines.append(
                f"- {modality}: MIE's mean rise {report.mean_std(ours)} against {report.mean_std(theirs)} for {other}: "
                f"{'flatter' if np.mean(ours) < np.mean(theirs) else 'sharper'}, {versus_seed_spread(ours, theirs)}."
            )
    if "mie_no_sam" in methods:
        pairs = [(summaries["mie"][m]["mean_rise"], summaries["mie_no_sam"][m]["mean_rise"]) for m in modalities]
        flatter = [np.mean(ours) < np.mean(theirs) for ours, theirs in pairs]
        firm = [beyond_seed_spread(ours, theirs) for ours, theirs in pairs]
        firm_names = ", ".join(m for m, f in zip(modalities, firm) if f) or "none"
        lines += [
            "",
            "**The paper against mfeat.** The paper's Figure 5 shows MIE's per-modality landscapes flatter "
            "than those of the same alternating training without SAM. Here MIE's mean rise is below MIE w/o "
            f"SAM's for {', '.join(m for m, f in zip(modalities, flatter) if f) or 'no modality'}"
            + (f" (beyond one standard deviation over seeds: {firm_names})" if seeds > 1 else "")
            + f": the claim {claim_status(flatter, firm, seeds)}.",
        ]
    return "\n".join(lines + [""])


def spectra_summaries(singular_values: Mapping) -> dict:
    """``{name: {modality: {layer: {statistic: per-seed values}}}}`` of :func:`spectrum_summary`.

    Args:
      singular_values: ``{name: {modality: {layer: [values per seed]}}}``.
    """
    summaries = {}
    for name, by_modality in singular_values.items():
        for modality, by_layer in by_modality.items():
            for layer, per_seed in by_layer.items():
                summary = [spectrum_summary(values) for values in per_seed]
                summaries.setdefault(name, {}).setdefault(modality, {})[layer] = {
                    k: [s[k] for s in summary] for k in summary[0]
                }
    return summaries


def marked_difference(ours: Sequence[float], theirs: Sequence[float], relative: bool) -> str:
    """The difference of the means, relative or absolute, with ``*`` when beyond the spread over seeds."""
    gap = np.mean(ours) / np.mean(theirs) - 1.0 if relative else np.mean(ours) - np.mean(theirs)
    mark = "*" if len(ours) > 1 and beyond_seed_spread(ours, theirs) else ""
    return (f"{gap:+.1%}" if relative else f"{gap:+.3f}") + mark


# (statistic of spectrum_summary, its name in the report, whether its differences are relative).
SPECTRUM_STATISTICS = (
    ("largest", "largest singular value", True),
    ("condition_number", "condition number", True),
    ("top_energy", "top-5 energy", False),
)


def spectra_section(spectra: Mapping, seeds: int) -> str:
    """Table 5's markdown: spectrum statistics per kernel and method, SAM's differences, the verdict.

    Args:
      spectra: :func:`run_spectra`'s result.
      seeds: the seeds behind each mean.

    Returns:
      The section, starting with its ``##`` title.
    """
    summaries = spectra_summaries(spectra["singular_values"])
    initial = spectra_summaries({"init": spectra["initial_singular_values"]})["init"]
    moved = spectra["relative_change"]
    methods = list(summaries)
    modalities = list(summaries[methods[0]])
    shapes = ", ".join(f"`{layer}` {spectra['shapes'][layer]}" for layer in HEAD_LAYERS)
    lines = [
        "## Table 5: singular values of the head layers",
        "",
        f"Singular values of each head kernel `[in, out]` ({shapes}) of each modality's classifier, at the end "
        "of the same trainings as the landscapes, and (`init`) before training: every method starts a seed "
        f"from the same initialisation. Top-5 values are means over {seeds} seed(s); the largest value, the "
        "condition number (largest / smallest), the share of the squared Frobenius norm in the top 5, and how "
        "far training moved the kernel (`‖W − W0‖ / ‖W0‖`) are mean ± standard deviation. SAM's effect "
        "is "
        "`mie` against `mie_no_sam` (both modify gradients) and, where present, `mie_no_gm` against `unimodal` "
        "(neither does).",
        "",
        "![spectra](spectra.png)",
        "",
        "| modality | layer | method | top-5 singular values | largest | condition number | top-5 energy "
        "| moved from init |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for modality in modalities:
        for layer in HEAD_LAYERS:
            for name in ["init", *methods]:
                summary = initial[modality][layer] if name == "init" else summaries[name][modality][layer]
                top = ", ".join(f"{v:.3f}" for v in np.mean(summary["top"], axis=0))
                change = "—" if name == "init" else report.mean_std(moved[name][modality][layer])
                lines.append(
                    f"| {modality} | {layer} | {name} | {top} | "
                    + " | ".join(report.mean_std(summary[k]) for k, _, _ in SPECTRUM_STATISTICS)
                    + f" | {change} |"
                )
    lines += [
        "",
        "Differences with and without SAM (relative for the largest singular value and the condition "
        "number, absolute for the top-5 energy; "
        + ("`*`: beyond one standard deviation over seeds" if seeds > 1 else ONE_SEED)
        + "):",
        "",
    ]
    pairs = [(a, b) for a, b in (("mie", "mie_no_sam"), ("mie_no_gm", "unimodal")) if a in methods and b in methods]
    for with_sam, without_sam in pairs:
        for modality in modalities:
            ours, theirs = summaries[with_sam][modality], summaries[without_sam][modality]
            changes = [
                f"{layer} "
                + ", ".join(
                    f"{label} {marked_difference(ours[layer][k], theirs[layer][k], relative)}"
                    for k, label, relative in SPECTRUM_STATISTICS
                )
                for layer in HEAD_LAYERS
            ]
            lines.append(f"- {modality}, {with_sam} against {without_sam}: " + "; ".join(changes) + ".")
    if "mie_no_sam" in methods:
        kernels = [(m, layer) for m in modalities for layer in HEAD_LAYERS]
        found = []
        for k, label, _ in SPECTRUM_STATISTICS:
            changed = [
                f"{m} {layer}"
                for m, layer in kernels
                if beyond_seed_spread(summaries["mie"][m][layer][k], summaries["mie_no_sam"][m][layer][k])
            ]
            found.append(
                f"the {label} in {len(changed)} of {len(kernels)} kernels"
                + (f" ({', '.join(changed)})" if changed else "")
            )
        travel = [np.mean(moved["mie"][m][layer]) for m, layer in kernels]
        lines += [
            "",
            "**The paper against mfeat.** The paper's Table 5 contrasts the head layers' singular values "
            "with and without SAM. Here SAM (`mie` against `mie_no_sam`) changes "
            + (
                "; ".join(found) + " beyond one standard deviation over seeds"
                if seeds > 1
                else f"the spectra by the amounts above ({ONE_SEED})"
            )
            + f". Training moves MIE's head kernels by {min(travel):.0%} to {max(travel):.0%} of their initial "
            "Frobenius norm, and no singular value moves further than its kernel does (Weyl's inequality: "
            "`|σ_i(W) − σ_i(W0)| <= ‖W − W0‖`), so every method's spectra stay that close to the `init` rows.",
        ]
    return "\n".join(lines + [""])


def plot_sensitivity(sensitivity: Mapping, parameter: str, path: str) -> None:
    """Mean test accuracy ± one standard deviation against the values of ``parameter``, one panel per prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    statistics = sweep_statistics(sensitivity, parameter)
    predictions = sensitivity_predictions(sensitivity)
    values = sensitivity[parameter]
    fig, axes = plt.subplots(1, len(predictions), figsize=(4 * len(predictions), 3.4))
    # Evenly spaced positions: the values are roughly geometric and rho includes 0.
    positions = np.arange(len(values))
    for ax, prediction in zip(axes, predictions):
        means, stds = statistics[prediction]
        ax.errorbar(positions, means, yerr=stds, marker="o", capsize=3)
        ax.set_xticks(positions, [str(v) for v in values])
        ax.set_xlabel(parameter)
        ax.set_title(prediction)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    fig.suptitle(f"MIE on mfeat: sensitivity to {parameter}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_landscape(landscape: Mapping, path: str) -> None:
    """Contours of seed 0's surfaces: a row per modality, a column per method, shared levels per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(landscape["surfaces"])
    modalities = list(landscape["surfaces"][methods[0]])
    grid = np.asarray(landscape["grid"])
    fig, axes = plt.subplots(
        len(modalities),
        len(methods),
        figsize=(3.4 * len(methods) + 1, 3.2 * len(modalities)),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for row, modality in enumerate(modalities):
        surfaces = {name: np.asarray(landscape["surfaces"][name][modality][0]) for name in methods}
        low, high = min(s.min() for s in surfaces.values()), max(s.max() for s in surfaces.values())
        # Log-spaced levels: the loss spans orders of magnitude between the centre and the corners.
        levels = np.geomspace(low, high, 16)
        for column, name in enumerate(methods):
            ax = axes[row, column]
            contours = ax.contour(grid, grid, surfaces[name].T, levels=levels, cmap="viridis")
            ax.plot(0, 0, "k+")
            ax.set_title(f"{name}: {modality}")
        fig.colorbar(contours, ax=list(axes[row]), label="training loss", format="%.2g")
    for ax in axes[-1]:
        ax.set_xlabel("d1")
    for ax in axes[:, 0]:
        ax.set_ylabel("d2")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_spectra(spectra: Mapping, path: str) -> None:
    """Each head kernel's singular values (mean over seeds) and at initialisation, a row per modality, a column
    per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = spectra["singular_values"]
    methods = list(values)
    modalities = list(values[methods[0]])
    fig, axes = plt.subplots(
        len(modalities), len(HEAD_LAYERS), figsize=(4 * len(HEAD_LAYERS), 3.2 * len(modalities)), squeeze=False
    )
    for row, modality in enumerate(modalities):
        for column, layer in enumerate(HEAD_LAYERS):
            ax = axes[row, column]
            initial = np.mean(spectra["initial_singular_values"][modality][layer], axis=0)
            ax.plot(np.arange(1, len(initial) + 1), initial, color="0.6", linewidth=3, label="init")
            # Distinct line styles: methods that share SAM (or its absence) nearly coincide.
            for name, style in zip(methods, ("-", "--", ":", "-.")):
                mean = np.mean(values[name][modality][layer], axis=0)
                ax.plot(np.arange(1, len(mean) + 1), mean, linestyle=style, label=name)
            ax.set_yscale("log")
            ax.set_title(f"{modality}: {layer}")
            ax.set_xlabel("index")
            ax.grid(alpha=0.3)
        axes[row, 0].set_ylabel("singular value")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: Mapping, out: str) -> str:
    """Writes ANALYSES.md and the PNGs of every analysis in ``results``.

    Args:
      results: ``{analysis: its run_* result with "settings"}`` for some of ``ANALYSES``.
      out: the directory to write to.

    Returns:
      The markdown.
    """
    sections = []
    for analysis in ANALYSES:
        if analysis not in results:
            continue
        data, settings = results[analysis], results[analysis]["settings"]
        header = (
            f"Made by `{settings['command']}` (the whole command: {settings['seconds']:.0f} s on "
            f"{settings['machine']}): {settings['seeds']} seed(s) (each seed also draws the data split), "
            f"training {settings['training']}."
        )
        if analysis == "sensitivity":
            for parameter in ("tau", "rho"):
                plot_sensitivity(data, parameter, os.path.join(out, f"sensitivity_{parameter}.png"))
            body = sensitivity_section(data, settings["seeds"])
        elif analysis == "landscape":
            plot_landscape(data, os.path.join(out, "landscape.png"))
            body = landscape_section(data, settings["seeds"])
        else:
            plot_spectra(data, os.path.join(out, "spectra.png"))
            body = spectra_section(data, settings["seeds"])
        title, _, rest = body.partition("\n\n")
        sections.append(f"{title}\n\n{header}\n\n{rest}")
    text = "\n".join(
        [
            "# MIE's analyses on mfeat (fac + mor)",
            "",
            "The paper's Figure 4 (sensitivity to tau and rho), Figure 5 (loss landscapes) and Table 5 (singular "
            "values of the head layers), reproduced on the embedded UCI Multiple Features dataset with the views "
            "`fac` (strong) and `mor` (weak), by `python -m experiments.analyses` "
            f"([`experiments/analyses.py`](../../experiments/analyses.py)). Raw numbers: [`{JSON_NAME}`]({JSON_NAME}).",
            "",
            *sections,
        ]
    )
    with open(os.path.join(out, MARKDOWN_NAME), "w") as f:
        f.write(text)
    return text


def training_description(quick: bool, overrides: Sequence[str]) -> str:
    """The training settings every run shares, in words."""
    config = run_config("mie", 0, quick, overrides)
    text = (
        f"{config.train.outer_iterations} outer iterations x {config.train.phase_epochs} epochs per phase, batch "
        f"{config.train.batch_size}, {config.optimizer.name} lr {config.optimizer.learning_rate}, "
        f"tau {config.mie.tau}, rho {config.sam.rho}"
    )
    return text + (f", overrides {', '.join(overrides)}" if overrides else "")


def parse_args(argv) -> argparse.Namespace:
    """The command's flags (``argv=None``: the process's)."""
    parser = argparse.ArgumentParser(prog="python -m experiments.analyses", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default=None, help="default docs/analyses (the committed report); reports/analyses-quick with --quick"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['seeds']} seed, {QUICK['values']} values, {QUICK['grid']}x{QUICK['grid']} grid, "
        f"methods {','.join(QUICK_MODEL_METHODS)}, shorter training",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=ANALYSES,
        help="run this analysis only (repeatable); stored numbers of the others are kept",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help=f"default {FULL['seeds']} ({QUICK['seeds']} with --quick)"
    )
    parser.add_argument(
        "--values",
        type=int,
        default=None,
        help=f"tau and rho values each, spread over the {len(TAU_VALUES)} of the sweep "
        f"(default {FULL['values']}, {QUICK['values']} with --quick)",
    )
    parser.add_argument(
        "--grid",
        type=int,
        default=None,
        help=f"landscape points per direction (default {FULL['grid']}, {QUICK['grid']} with --quick)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"methods of the landscape and spectra, comma-separated (default {','.join(MODEL_METHODS)})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a training config value for every run (repeatable)",
    )
    return parser.parse_args(argv)


def make_settings(args) -> dict:
    """The run's sizes, methods and training overrides from the parsed flags.

    Raises:
      ValueError: a size out of range, a method that is not alternating (the analyses
        need one classifier per modality), or a bad ``--set``.
    """
    sizes = QUICK if args.quick else FULL
    methods = args.methods.split(",") if args.methods else list(QUICK_MODEL_METHODS if args.quick else MODEL_METHODS)
    settings = {
        "quick": args.quick,
        "overrides": args.overrides,
        "methods": methods,
        **{k: sizes[k] if getattr(args, k) is None else getattr(args, k) for k in sizes},
    }
    if "mie" not in methods:
        raise ValueError("--methods must include mie: the other methods are compared with it.")
    for name in methods:
        if not run_config(name, 0, args.quick, args.overrides).reads("alternating"):
            raise ValueError(f"--methods takes alternating methods (one classifier per modality), got {name!r}.")
    if settings["seeds"] < 1:
        raise ValueError(f"--seeds must be >= 1, got {settings['seeds']}.")
    if settings["grid"] < 3 or settings["grid"] % 2 == 0:
        raise ValueError(
            f"--grid must be odd and >= 3, so that 0 (the trained weights) is on it; got {settings['grid']}."
        )
    pick_values(TAU_VALUES, settings["values"])
    return settings


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = make_settings(args)
        training = training_description(args.quick, args.overrides)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    enable_compilation_cache()
    if args.out is None:  # A quick check never overwrites the committed full report.
        args.out = os.path.join("reports", "analyses-quick") if args.quick else os.path.join("docs", "analyses")
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, JSON_NAME)
    results = {}
    if args.only and os.path.exists(json_path):
        with open(json_path) as f:
            results = json.load(f)
    todo = [analysis for analysis in ANALYSES if analysis in (args.only or ANALYSES)]
    log = Progress()
    models = None
    for analysis in todo:
        if analysis == "sensitivity":
            results[analysis] = run_sensitivity(settings, log)
            continue
        if models is None:  # The landscape and the spectra describe the same trained models.
            models = train_models(settings, log)
        if analysis == "landscape":
            results[analysis] = run_landscape(models, settings["grid"], log)
        else:
            results[analysis] = run_spectra(models)
    command = " ".join(["python -m experiments.analyses", *(sys.argv[1:] if argv is None else argv)])
    machine = f"{jax.devices()[0].platform.upper()}, {os.cpu_count()} cores"
    for analysis in todo:
        results[analysis]["settings"] = {
            "command": command,
            "machine": machine,
            "seconds": time.time() - log.start,
            "training": training,
            **{k: settings[k] for k in ("seeds", "values", "grid", "methods")},
        }
    with open(json_path, "w") as f:
        json.dump(results, f)
    print(write_report(results, args.out))
    log(f"wrote {os.path.join(args.out, MARKDOWN_NAME)}, {JSON_NAME} and the PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
