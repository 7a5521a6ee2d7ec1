"""From host columns to the device: chunks of training batches, prefetched, and batched passes over a split.

Nothing here holds a split on the device. A training chunk is ``K`` steps'
batches, gathered on the host from the split's columns
(:mod:`mie_jax.data.columns`) and placed on the device (split over the mesh's
``data`` axis when there is one) while the previous chunk computes. A pass over
a split (prediction, the covariance pass) moves ``batch_size`` rows at a
time, the last batch padded so one compiled function serves every batch.
"""

import concurrent.futures
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mie_jax.train import parallel

# A chunk's host-to-device bytes are capped here (device memory for the chunk's data stays bounded
# whatever the batch size and the example size); chunk_steps=N overrides.
CHUNK_BYTES = 256 * 2**20
# At most this many steps per chunk by default: progress and checkpoints come at least this often.
DEFAULT_CHUNK_STEPS = 100


class Batch(NamedTuple):
    """What one training step reads; stacked ``[K, ...]`` over a chunk's steps.

    Attributes:
      inputs: modality -> ``[B, ...]`` rows of the modalities the phase trains on.
      labels: ``[B]`` int32.
      lam: the step's mixup weight (1: no mixing).
      partners: ``[B]`` the mixup partner of every row.
      crops: augmented modality -> ``(boxes [B, 4], flips [B])``
        (:mod:`mie_jax.train.augment`); empty without augmentation.
      key: the step's PRNG key (OGM-GE's noise), or ``None``.
    """

    inputs: Mapping[str, Any]
    labels: Any
    lam: Any
    partners: Any
    crops: Mapping[str, Any]
    key: Any = None


class StepDraws(NamedTuple):
    """Everything a phase draws on the host, one row per step: a pure function of (seed, phase).

    Attributes:
      order: ``[S, B]`` row indices of each step's batch.
      lam: ``[S]`` mixup weights.
      partners: ``[S, B]`` mixup partners.
      crops: modality -> ``(boxes [S, B, 4], flips [S, B])``.
      keys: ``[S]`` PRNG keys, or ``None``.
    """

    order: np.ndarray
    lam: np.ndarray
    partners: np.ndarray
    crops: Mapping[str, Any]
    keys: Any = None

    @property
    def num_steps(self) -> int:
        return self.order.shape[0]


def chunk_steps(config_steps: int, steps_per_epoch: int, bytes_per_step: int) -> int:
    """Steps per chunk: ``config_steps`` if set, else one epoch, at most ``DEFAULT_CHUNK_STEPS`` and ``CHUNK_BYTES``."""
    if config_steps:
        return config_steps
    return max(1, min(steps_per_epoch, DEFAULT_CHUNK_STEPS, CHUNK_BYTES // max(bytes_per_step, 1)))


def bytes_per_step(columns: Mapping[str, Any], batch_size: int) -> int:
    """Host-to-device bytes of one step's inputs."""
    return batch_size * sum(int(np.prod(c.shape[1:])) * np.dtype(c.dtype).itemsize for c in columns.values())


def host_chunk(columns: Mapping[str, Any], labels: np.ndarray, draws: StepDraws, start: int, stop: int) -> Batch:
    """Steps ``[start, stop)`` of a phase as one :class:`Batch` of ``[K, B, ...]`` host arrays."""
    order = draws.order[start:stop]
    rows = order.reshape(-1)
    inputs = {m: np.asarray(c[rows]).reshape(*order.shape, *c.shape[1:]) for m, c in columns.items()}
    crops = {m: (boxes[start:stop], flips[start:stop]) for m, (boxes, flips) in draws.crops.items()}
    keys = None if draws.keys is None else draws.keys[start:stop]
    return Batch(inputs, labels[order], draws.lam[start:stop], draws.partners[start:stop], crops, keys)


def put_chunk(chunk: Batch, mesh: Optional[jax.sharding.Mesh]) -> Batch:
    """A host chunk on the device; with a mesh, every ``[K, B, ...]`` array split over ``data`` along B."""
    if mesh is None or mesh.size == 1:
        return jax.device_put(chunk)
    by_batch = NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda a: jax.device_put(a, by_batch if np.ndim(a) >= 2 else whole), chunk)


def prefetched(items: Iterable[Callable[[], Any]]) -> Iterator[Any]:
    """Calls each of ``items`` (host work: reading, gathering, transferring) one ahead, on a thread.

    While the caller computes on item ``k``, item ``k + 1`` is being prepared.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = None
        for make in items:
            future = pool.submit(make)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def batched_rows(length: int, batch_size: int) -> Iterator[tuple]:
    """``(rows, count)`` for consecutive batches of ``range(length)``: the last one padded to ``batch_size``.

    Padding repeats the last row, so the padded batch is valid input; ``count``
    says how many of its rows are real.
    """
    for start in range(0, length, batch_size):
        count = min(batch_size, length - start)
        rows = np.arange(start, start + batch_size)
        yield np.minimum(rows, length - 1), count


def put_rows(array: np.ndarray, mesh: Optional[jax.sharding.Mesh]):
    """A ``[B, ...]`` host batch on the device, split over the mesh when ``B`` divides evenly."""
    if mesh is None or mesh.size == 1 or len(array) % mesh.size:
        return jax.device_put(array)
    return jax.device_put(array, NamedSharding(mesh, PartitionSpec(parallel.DATA_AXIS)))


def map_batches(fn: Callable, columns: Mapping[str, Any], batch_size: int, mesh=None) -> np.ndarray:
    """``fn(batch)`` over consecutive ``batch_size`` batches of ``columns``' rows, concatenated on the host.

    Args:
      fn: maps ``{name: [batch_size, ...]}`` device arrays to ``[batch_size, ...]``
        outputs (e.g. logits); one compiled shape serves every batch.
      columns: name -> column, all of one length.
      batch_size: rows per call.
      mesh: places each batch split over its devices.

    Returns:
      The outputs of every real row, in order (padding dropped).
    """
    length = len(next(iter(columns.values())))
    if length == 0:
        raise ValueError("map_batches: the split has no rows.")
    batches = list(batched_rows(length, batch_size))
    loads = (
        lambda rows=rows: {m: put_rows(np.asarray(c[rows]), mesh) for m, c in columns.items()} for rows, _ in batches
    )
    counts = [count for _, count in batches]
    outputs = [np.asarray(fn(batch))[:count] for batch, count in zip(prefetched(loads), counts)]
    return np.concatenate(outputs)
