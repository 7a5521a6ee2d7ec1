"""The run driver shared by every method: phases, validation, model selection, checkpoints."""

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mie_jax import fusion, metrics
from mie_jax.data.registry import MultimodalDataset, Split, check_dataset
from mie_jax.train import checkpoint, parallel
from mie_jax.train.alternating import AlternatingMethod
from mie_jax.train.joint import JointMethod
from mie_jax.train.shared_head import SharedHeadMethod
from mie_jax.train.config import TrainConfig

FUSIONS = ("average", "weighted")


class NonFiniteLossError(FloatingPointError):
    """A phase produced a non-finite loss; the last good checkpoint is kept."""


def build_method(config: TrainConfig, dataset: MultimodalDataset, mesh=None):
    """The training method named by ``config.method``, over ``dataset``'s train split."""
    missing = [m for m in config.modalities if m not in dataset.splits["train"].inputs]
    if missing:
        raise ValueError(
            f"modalities {missing} are not in dataset {dataset.name!r} "
            f"(it has {sorted(dataset.splits['train'].inputs)})."
        )
    train = dataset.splits["train"]
    if config.alternating:
        return AlternatingMethod(config, train, dataset.num_classes, mesh)
    if config.method == "mla":
        return SharedHeadMethod(config, train, dataset.num_classes, mesh)
    return JointMethod(config, train, dataset.num_classes, mesh)


def evaluate(method, variables, split: Split) -> dict:
    """Metrics of each modality's prediction and of every fusion of them.

    Returns a dict from prediction name (a modality, ``average``,
    ``weighted``, or ``joint`` for jointly trained models) to
    :func:`mie_jax.metrics.classification_metrics`.
    """
    logits = method.logits(variables, split.inputs)
    results = {
        name: metrics.classification_metrics(split.labels, np.asarray(jax.nn.softmax(value)))
        for name, value in logits.items()
    }
    if method.per_modality:
        stacked = jnp.stack([logits[m] for m in method.modalities])
        for name in FUSIONS:
            results[name] = metrics.classification_metrics(
                split.labels, np.asarray(fusion.fuse(stacked, name))
            )
    return results


def headline(method, fusion_name: str) -> str:
    """The prediction that selects and reports the model."""
    return fusion_name if method.per_modality else "joint"


def train(
    config: TrainConfig,
    dataset: MultimodalDataset,
    *,
    fusion_name: str = "average",
    workdir: Optional[str] = None,
    resume: bool = False,
    on_phase: Optional[Callable[[dict], None]] = None,
    stop_after_phase: Optional[int] = None,
) -> dict:
    """Trains ``config.method`` phase by phase and reports the selected model's metrics.

    After each phase the validation split (or, with ``select_on="test"``, the
    test split, as the released code does) is evaluated; the parameters with
    the best ``selection_metric`` of the headline prediction are kept, and
    their test metrics are reported.

    Args:
      config: the run's configuration.
      dataset: the loaded dataset.
      fusion_name: ``average`` or ``weighted``: the fusion that selects and is
        reported first for per-modality methods.
      workdir: where Orbax checkpoints go (``workdir/checkpoints``); ``None``
        keeps everything in memory.
      resume: continue from the latest checkpoint in ``workdir``.
      on_phase: called with each phase's record (phase, num_phases, name,
        headline, mean loss, step_losses, and the selection split's metrics).
      stop_after_phase: stop (as if killed) after this many phases; for tests
        and for splitting long runs.

    Returns:
      ``{"history": [...], "selected_phase": int, "selected_on": str,
      "headline": str, "test": metrics of the selected model}``.

    Raises:
      NonFiniteLossError: a phase's loss is not finite (the message names
        the phase and modality; earlier checkpoints stay).
      checkpoint.CheckpointMismatchError: ``resume`` with an incompatible checkpoint.
      ValueError: a dataset whose modalities and labels disagree
        (:func:`mie_jax.data.registry.check_dataset`).
    """
    if fusion_name not in FUSIONS:
        raise ValueError(f"fusion must be one of {list(FUSIONS)}, got {fusion_name!r}.")
    check_dataset(dataset)
    mesh = parallel.data_mesh(config.num_devices)
    parallel.check_batch_size(config.batch_size, mesh)
    method = build_method(config, dataset, mesh)
    head = headline(method, fusion_name)
    selection_split = dataset.splits["test" if config.select_on == "test" else "validation"]
    state = parallel.replicate(method.init(), mesh)
    best = {"variables": method.variables(state), "score": jnp.asarray(-math.inf), "phase": jnp.asarray(-1)}
    history, start = [], 0
    checkpointer = checkpoint.RunCheckpointer(f"{workdir}/checkpoints") if workdir else None
    if resume and checkpointer is not None and checkpointer.latest_step() is not None:
        start = checkpointer.latest_step()
        restored, meta = checkpointer.restore(start, {"state": state, "best": best}, config)
        state, best, history = restored["state"], restored["best"], meta["history"]
    end = method.num_phases if stop_after_phase is None else min(stop_after_phase, method.num_phases)
    for phase in range(start, end):
        best_variables = best["variables"] if int(best["phase"]) >= 0 else None
        state, info = method.run_phase(state, phase, best_variables)
        losses = info["losses"]
        nonfinite = int(np.sum(~np.isfinite(losses)))
        # Skipping tolerates isolated bad steps, not a phase that ends in more of them than may be skipped.
        diverged = not np.any(np.isfinite(losses[-(config.skip_nonfinite_steps + 1):]))
        if nonfinite and (not config.skip_nonfinite_steps or diverged):
            bad_step = int(np.flatnonzero(~np.isfinite(losses))[0])
            raise NonFiniteLossError(
                f"phase {phase + 1}/{method.num_phases} ({method.phase_name(phase)}), step {bad_step + 1}: "
                f"loss is {losses[bad_step]}; the last good checkpoint is kept in {workdir or '(no workdir)'}."
            )
        validation = evaluate(method, method.variables(state), selection_split)
        score = validation[head][config.selection_metric]
        if score > float(best["score"]):
            best = {"variables": method.variables(state), "score": jnp.asarray(score), "phase": jnp.asarray(phase)}
        record = {"phase": phase, "num_phases": method.num_phases, "name": method.phase_name(phase),
                  "headline": head, "loss": float(np.mean(losses[np.isfinite(losses)])),
                  "nonfinite_steps": nonfinite,
                  "step_losses": [float(x) for x in losses], "selection": validation}
        history.append(record)
        if checkpointer is not None:
            meta = {"config": checkpoint.config_to_json(config), "history": history}
            checkpointer.save(phase + 1, {"state": state, "best": best}, meta)
        if on_phase is not None:
            on_phase(record)
    if checkpointer is not None:
        checkpointer.close()
    return {
        "history": history,
        "selected_phase": int(best["phase"]),
        "selected_on": config.select_on,
        "headline": head,
        "num_phases": method.num_phases,
        "finished": end == method.num_phases,
        "test": evaluate(method, best["variables"], dataset.splits["test"]),
    }
