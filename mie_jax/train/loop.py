"""The phase loop every method shares: a phase's steps run as jitted chunks of ``K`` steps.

A method describes a phase as a :class:`PhasePlan`: its step function
``step(constants, carry, batch) -> (carry, loss)`` (compiled once into a
``lax.scan`` over a chunk by :func:`chunk_runner`), the carry it starts from,
the phase's host draws (batch order, mixup, crops, keys: a pure function of
seed and phase) and the columns it reads. :func:`run_chunks` feeds the chunks
(:mod:`mie_jax.train.feed`, the next one read and transferred while the
current one computes) and hands control back to the host after each, for
progress, checkpoints and stopping. Cutting a phase into chunks changes no
number: each step sees the same batch and the same draws for any ``K``.
"""

from typing import Any, Callable, Iterator, Mapping, NamedTuple, Tuple

import jax
import numpy as np

from mie_jax.train import feed


class PhasePlan(NamedTuple):
    """One phase of a method, ready to run.

    Attributes:
      run_chunk: :func:`chunk_runner` of the method's step.
      constants: what every step reads and none changes (e.g. MIE's ``T`` tree).
      carry: the state the steps update, at the phase's start (or where a
        checkpoint inside the phase left it).
      draws: the phase's :class:`~mie_jax.train.feed.StepDraws`.
      columns: modality -> training column, only the modalities the phase trains on.
      labels: the training labels.
      steps_per_epoch: steps of one epoch (the default chunk is at most one).
    """

    run_chunk: Callable
    constants: Any
    carry: Any
    draws: feed.StepDraws
    columns: Mapping[str, Any]
    labels: np.ndarray
    steps_per_epoch: int

    @property
    def num_steps(self) -> int:
        return self.draws.num_steps

    def chunk_steps(self, requested: int = 0) -> int:
        """Steps per chunk: ``requested``, or for 0 the default of :func:`mie_jax.train.feed.chunk_steps`."""
        batch_size = self.draws.order.shape[1]
        return feed.chunk_steps(requested, self.steps_per_epoch, feed.bytes_per_step(self.columns, batch_size))


def chunk_runner(step: Callable) -> Callable:
    """``run(constants, carry, batches) -> (carry, losses [K])``: ``step`` scanned over a chunk, jitted.

    One compiled program serves every chunk of ``K`` steps (a phase's last,
    shorter chunk compiles once more).
    """

    @jax.jit
    def run(constants, carry, batches):
        return jax.lax.scan(lambda c, batch: step(constants, c, batch), carry, batches)

    return run


def run_chunks(plan: PhasePlan, *, start: int, chunk: int, mesh=None) -> Iterator[Tuple[Any, int, np.ndarray]]:
    """Runs the phase's steps from ``start``, yielding ``(carry, steps done, the chunk's losses)`` after each chunk.

    Args:
      plan: the phase.
      start: the first step to run (0, or where a checkpoint inside the phase stopped).
      chunk: steps per chunk.
      mesh: splits every batch over its devices.
    """
    bounds = [(a, min(a + chunk, plan.num_steps)) for a in range(start, plan.num_steps, chunk)]
    loads = (
        lambda a=a, b=b: feed.put_chunk(feed.host_chunk(plan.columns, plan.labels, plan.draws, a, b), mesh)
        for a, b in bounds
    )
    carry = plan.carry
    for (_, stop), batches in zip(bounds, feed.prefetched(loads)):
        carry, losses = plan.run_chunk(plan.constants, carry, batches)
        yield carry, stop, np.asarray(losses)


def run_phase(method, state, phase: int, best_variables=None, *, chunk: int = 0, mesh=None) -> Tuple[Any, np.ndarray]:
    """A whole phase of ``method`` from its start, without checkpoints: ``(state after it, losses [S])``.

    For analyses and benchmarks that drive a method themselves; the trainer
    runs the chunks one by one (:func:`run_chunks`) to report and checkpoint between them.

    Args:
      chunk: steps per chunk (0: the trainer's default, :meth:`PhasePlan.chunk_steps`).
    """
    plan = method.phase_plan(state, phase, best_variables)
    carry, losses = plan.carry, []
    for carry, _, chunk_losses in run_chunks(plan, start=0, chunk=plan.chunk_steps(chunk), mesh=mesh):
        losses.append(chunk_losses)
    return method.finish_phase(state, phase, carry), np.concatenate(losses)
