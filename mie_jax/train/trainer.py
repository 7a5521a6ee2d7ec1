"""The run driver shared by every method: chunked phases, validation, model selection, checkpoints."""

import contextlib
import math
import sys
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mie_jax import fusion, metrics
from mie_jax.data.registry import MultimodalDataset, Split, check_dataset
from mie_jax.train import checkpoint, loop, parallel, progress, registry
from mie_jax.train.config import TrainConfig

FUSIONS = fusion.FUSION_METHODS


class NonFiniteLossError(FloatingPointError):
    """A phase produced a non-finite loss; the last good checkpoint is kept."""


def build_method(config: TrainConfig, dataset: MultimodalDataset, mesh=None):
    """The registered method ``config.method`` (:mod:`mie_jax.train.registry`), over ``dataset``'s train split."""
    missing = [m for m in config.modalities if m not in dataset.splits["train"].inputs]
    if missing:
        raise ValueError(
            f"modalities {missing} are not in dataset {dataset.name!r} "
            f"(it has {sorted(dataset.splits['train'].inputs)})."
        )
    return registry.get(config.method).build(config, dataset.splits["train"], dataset.num_classes, mesh)


def evaluate(method, variables, split: Split) -> dict:
    """Metrics of each modality's prediction and of every fusion of them.

    The split is read ``eval_batch_size`` rows at a time (``method.logits``),
    so device memory does not grow with its size.

    Returns a dict from prediction name (a modality, ``average``,
    ``weighted``, or ``joint`` for jointly trained models) to
    :func:`mie_jax.metrics.classification_metrics`.

    Raises:
      NonFiniteLossError: a prediction holds non-finite logits.
    """
    logits = method.logits(variables, split.inputs)
    for name, value in logits.items():
        if not np.all(np.isfinite(value)):
            raise NonFiniteLossError(f"the {name} predictions hold non-finite values")
    results = {
        name: metrics.classification_metrics(split.labels, np.asarray(jax.nn.softmax(value)))
        for name, value in logits.items()
    }
    if method.per_modality:
        stacked = jnp.stack([logits[m] for m in method.modalities])
        for name in FUSIONS:
            results[name] = metrics.classification_metrics(split.labels, np.asarray(fusion.fuse(stacked, name)))
    return results


def headline(method, fusion_name: str) -> str:
    """The prediction that selects and reports the model."""
    return fusion_name if method.per_modality else "joint"


class _Position(NamedTuple):
    """Where a run stands: the phase, the steps done in it and their losses, and the run's steps so far."""

    phase: int = 0
    phase_step: int = 0
    phase_losses: tuple = ()
    steps_done: int = 0


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def train(
    config: TrainConfig,
    dataset: MultimodalDataset,
    *,
    fusion_name: str = "average",
    workdir: Optional[str] = None,
    resume: bool = False,
    on_phase: Optional[Callable[[dict], None]] = None,
    on_restore: Optional[Callable[[list], None]] = None,
    quiet: bool = False,
    stop_after_phase: Optional[int] = None,
    stop_after_steps: Optional[int] = None,
) -> dict:
    """Trains ``config.method`` phase by phase and reports the selected model's metrics.

    Each phase runs in chunks of ``config.chunk_steps`` steps
    (:mod:`mie_jax.train.loop`), reading its batches from the training split's
    columns; between chunks the host updates the progress bar and, every
    ``checkpoint_every_steps`` steps or ``checkpoint_every_minutes``,
    checkpoints inside the phase. After each phase the validation split (or,
    with ``select_on="test"``, the test split, as the released code does) is
    evaluated; the parameters with the best ``selection_metric`` of the
    headline prediction are kept, and their test metrics are reported.

    Args:
      config: the run's configuration.
      dataset: the loaded dataset.
      fusion_name: ``average`` or ``weighted``: the fusion that selects and is
        reported first for per-modality methods.
      workdir: where Orbax checkpoints go (``workdir/checkpoints``); ``None``
        keeps everything in memory.
      resume: continue from the newest intact checkpoint in ``workdir``
        (inside a phase if it was written there).
      on_phase: called with each phase's record (phase, num_phases, name,
        headline, mean loss, step_losses, and the selection split's metrics).
      on_restore: called once with the restored history (the phase records
        so far) after resuming from a checkpoint.
      quiet: plain progress lines instead of a bar.
      stop_after_phase: stop (as if killed) after this many phases; for tests
        and for splitting long runs.
      stop_after_steps: stop (as if killed) at the first chunk boundary after
        this many training steps of the run, checkpointing there; for tests.

    Returns:
      ``{"history": [...], "selected_phase": int, "selected_on": str,
      "headline": str, "test": metrics of the selected model}``.

    Raises:
      NonFiniteLossError: a phase's loss is not finite (the message names
        the phase, modality and step; earlier checkpoints stay).
      checkpoint.CheckpointMismatchError: ``resume`` with an incompatible checkpoint.
      ValueError: a dataset whose modalities and labels disagree
        (:func:`mie_jax.data.registry.check_dataset`).
    """
    if fusion_name not in FUSIONS:
        raise ValueError(f"fusion must be one of {list(FUSIONS)}, got {fusion_name!r}.")
    check_dataset(dataset)
    mesh = parallel.data_mesh(config.train.num_devices)
    parallel.check_batch_size(config.train.batch_size, mesh)
    method = build_method(config, dataset, mesh)
    head = headline(method, fusion_name)
    selection_split = dataset.splits["test" if config.train.select_on == "test" else "validation"]
    state = parallel.replicate(method.init(), mesh)
    best = {"variables": method.variables(state), "score": jnp.asarray(-math.inf), "phase": jnp.asarray(-1)}
    history, position = [], _Position()
    # Orbax's threads end with the run, whatever ends it.
    opened = checkpoint.RunCheckpointer(f"{workdir}/checkpoints") if workdir else contextlib.nullcontext()
    with opened as checkpointer:
        if resume and checkpointer is not None:
            restored = checkpointer.restore_latest({"state": state, "best": best}, config, _warn)
            if restored is not None:
                _, tree, meta = restored
                state, best, history = tree["state"], tree["best"], meta["history"]
                position = _Position(
                    meta.get("phase", len(history)),
                    meta.get("phase_step", 0),
                    tuple(meta.get("phase_losses", ())),
                    meta.get("steps_done", 0),
                )
                if on_restore is not None:
                    on_restore(list(history))

        def save(tree, position):
            meta = {
                "config": checkpoint.config_to_json(config),
                "history": history,
                **position._asdict(),
            }
            checkpointer.save(position.steps_done, tree, meta)

        end = method.num_phases if stop_after_phase is None else min(stop_after_phase, method.num_phases)
        saved_time, saved_steps = time.monotonic(), position.steps_done
        phase = position.phase
        while phase < end:
            best_variables = best["variables"] if int(best["phase"]) >= 0 else None
            plan = method.phase_plan(state, phase, best_variables, inside=position.phase_step > 0)
            chunk = plan.chunk_steps(config.train.chunk_steps)
            losses, steps_done = list(position.phase_losses), position.steps_done
            bar = progress.PhaseProgress(
                f"phase {phase + 1}/{method.num_phases} ({method.phase_name(phase)})",
                plan.num_steps,
                position.phase_step,
                config.train.batch_size,
                bar=progress.wants_bar(quiet),
            )
            carry = plan.carry
            try:
                for carry, done, chunk_losses in loop.run_chunks(
                    plan, start=position.phase_step, chunk=chunk, mesh=mesh
                ):
                    losses.extend(float(x) for x in chunk_losses)
                    steps_done += len(chunk_losses)
                    bar.update(done, float(np.mean(chunk_losses)))
                    # A diverged phase stops here, before a checkpoint could keep its state.
                    _check_finite(np.asarray(losses), config, method, phase, checkpointer)
                    if done == plan.num_steps:
                        break
                    stopping = stop_after_steps is not None and steps_done >= stop_after_steps
                    due = _checkpoint_due(config, steps_done - saved_steps, time.monotonic() - saved_time)
                    if checkpointer is not None and (due or stopping):
                        save(
                            {"state": method.state_inside(state, phase, carry), "best": best},
                            _Position(phase, done, tuple(losses), steps_done),
                        )
                        saved_time, saved_steps = time.monotonic(), steps_done
                    if stopping:
                        return _finish(method, best, history, config, head, dataset, finished=False)
            finally:
                bar.close()
            state = method.finish_phase(state, phase, carry)
            losses = np.asarray(losses, np.float64)
            try:
                validation = evaluate(method, method.variables(state), selection_split)
            except NonFiniteLossError as error:  # Skipped steps kept the weights finite, not the outputs.
                raise NonFiniteLossError(
                    f"phase {phase + 1}/{method.num_phases} ({method.phase_name(phase)}): {error} after "
                    f"{int(np.sum(~np.isfinite(losses)))} of {len(losses)} steps were skipped as non-finite "
                    f"(optimizer.skip_nonfinite_steps={config.optimizer.skip_nonfinite_steps}); lower learning_rate; "
                    f"{_kept(checkpointer)}."
                ) from None
            score = validation[head][config.train.selection_metric]
            if score > float(best["score"]):
                best = {"variables": method.variables(state), "score": jnp.asarray(score), "phase": jnp.asarray(phase)}
            record = {
                "phase": phase,
                "num_phases": method.num_phases,
                "name": method.phase_name(phase),
                "headline": head,
                "loss": float(np.mean(losses[np.isfinite(losses)])),
                "nonfinite_steps": int(np.sum(~np.isfinite(losses))),
                "step_losses": [float(x) for x in losses],
                "selection": validation,
            }
            history.append(record)
            position = _Position(phase + 1, 0, (), steps_done)
            if checkpointer is not None:
                save({"state": state, "best": best}, position)
                saved_time, saved_steps = time.monotonic(), steps_done
            if on_phase is not None:
                on_phase(record)
            phase += 1
        return _finish(method, best, history, config, head, dataset, finished=end == method.num_phases)


def _checkpoint_due(config, steps_since: int, seconds_since: float) -> bool:
    """Whether a checkpoint inside the phase is due, by ``checkpoint_every_steps`` or ``_minutes``."""
    every_steps, every_minutes = config.train.checkpoint_every_steps, config.train.checkpoint_every_minutes
    by_steps = every_steps and steps_since >= every_steps
    by_time = every_minutes and seconds_since >= 60 * every_minutes
    return bool(by_steps or by_time)


def _check_finite(losses, config, method, phase, checkpointer) -> None:
    """Raises :class:`NonFiniteLossError` unless the phase's non-finite steps may be skipped."""
    nonfinite = ~np.isfinite(losses)
    if not nonfinite.any():
        return
    # Skipping tolerates isolated bad steps, not a phase that ends in more of them than may be skipped.
    skip = config.optimizer.skip_nonfinite_steps
    diverged = not np.any(np.isfinite(losses[-(skip + 1) :]))
    if skip and not diverged:
        return
    bad_step = int(np.flatnonzero(nonfinite)[0])
    why = f"; more than optimizer.skip_nonfinite_steps={skip} non-finite steps in a row at its end" if skip else ""
    raise NonFiniteLossError(
        f"phase {phase + 1}/{method.num_phases} ({method.phase_name(phase)}), step {bad_step + 1}: "
        f"loss is {losses[bad_step]}{why}; {_kept(checkpointer)}."
    )


def _kept(checkpointer) -> str:
    if checkpointer is not None and checkpointer.latest_step() is not None:
        return f"the last good checkpoint is kept in {checkpointer.directory}"
    return "no checkpoint was written"


def _finish(method, best, history, config, head, dataset, *, finished: bool) -> dict:
    return {
        "history": history,
        "selected_phase": int(best["phase"]),
        "selected_on": config.train.select_on,
        "headline": head,
        "num_phases": method.num_phases,
        "finished": finished,
        "test": evaluate(method, best["variables"], dataset.splits["test"]),
    }
