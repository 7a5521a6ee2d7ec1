"""Orbax checkpoints of a run: the method's state, the best parameters, and the history.

Every checkpoint is verified when it is restored: :meth:`RunCheckpointer.save`
stores, in the checkpoint's JSON metadata (written by Orbax inside the step's
directory, before the step is finalised), the dtype, shape and SHA-256 of the
bytes of every array it saves and a SHA-256 of the metadata itself (config,
history, position), and :meth:`RunCheckpointer.restore` checks both. Orbax itself has no such verification: its
TensorStore arrays (zarr with zstd, in an OCDBT database) carry no checksum of
their data, so bytes changed on disk would otherwise be restored silently.
"""

import hashlib
import json
import os
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from mie_jax.train.config import LAYOUT_KEYS, flat_items


# The keys of the per-array checksums, and of the checksum of the rest of the metadata, in a checkpoint's metadata.
CHECKSUMS_KEY = "array_checksums"
META_CHECKSUM_KEY = "meta_sha256"

# Where damaged checkpoints are moved (next to ``checkpoints/``) once a resume fell back past them.
DAMAGED_DIRNAME = "checkpoints-damaged"


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir was written by a different configuration."""


class CheckpointDamagedError(ValueError):
    """A checkpoint (or, from ``restore_latest``, every checkpoint) cannot be read or fails verification."""


class RunCheckpointer:
    """Saves after every phase, keeps the last ``max_to_keep``; each holds the best-so-far params.

    Orbax writes each step to a temporary directory and renames it when
    complete, so a run killed mid-save never restores a half-written step;
    checksums (see the module's docstring) catch what changed afterwards.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            # Clean up what a save interrupted by a kill or a full disk left behind.
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True),
        )

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list:
        return sorted(self.manager.all_steps())

    def step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, tree: Any, meta: dict) -> None:
        """Saves ``tree`` and the JSON ``meta`` (plus the arrays' checksums) as ``step``."""
        meta = dict(meta, **{CHECKSUMS_KEY: tree_checksums(tree)})
        meta[META_CHECKSUM_KEY] = _meta_checksum(meta)
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, target: Any, config) -> tuple:
        """Restores ``(tree, meta)`` of ``step`` into the structure of ``target``, verified.

        Raises:
          CheckpointMismatchError: the stored config differs from ``config``, or
            the stored arrays do not fit ``target`` (a different model or dataset).
          CheckpointDamagedError: the step cannot be read, or an array's bytes
            differ from the checksum stored at save (the message names the path).
        """
        path = self.step_path(step)
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as error:  # Unreadable JSON, undecodable bytes, missing files: all damage.
            raise CheckpointDamagedError(
                f"checkpoint {path} is damaged: its metadata cannot be read ({_first_line(error)})."
            ) from None
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise CheckpointDamagedError(f"checkpoint {path} is damaged: its metadata holds no config.")
        if META_CHECKSUM_KEY not in meta or CHECKSUMS_KEY not in meta:
            raise CheckpointDamagedError(
                f"checkpoint {path} cannot be verified: its metadata holds no "
                "checksums (damaged, or written by an older version)."
            )
        if meta[META_CHECKSUM_KEY] != _meta_checksum(meta):
            raise CheckpointDamagedError(
                f"checkpoint {path} is damaged: its metadata (config, history) differs from its checksum at save."
            )
        stored, current = meta["config"], config_to_json(config)
        differing = sorted(
            k for k in set(stored) | set(current) if k not in LAYOUT_KEYS and stored.get(k) != current.get(k)
        )
        if differing:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in differing)
            raise CheckpointMismatchError(
                f"checkpoint in {self.directory} was written with a different config ({details}); "
                "use another --workdir or drop --resume."
            )
        checksums = meta[CHECKSUMS_KEY]
        if not isinstance(checksums, dict):
            raise CheckpointDamagedError(f"checkpoint {path} is damaged: malformed array checksums.")
        expected = {
            key: (entry["dtype"], list(entry["shape"]))
            for key, entry in checksums.items()
            if isinstance(entry, dict) and "dtype" in entry and "shape" in entry
        }
        if len(expected) != len(checksums):
            raise CheckpointDamagedError(f"checkpoint {path} is damaged: malformed array checksums.")
        wanted = tree_signature(target)
        if expected != wanted:
            raise CheckpointMismatchError(
                f"checkpoint in {self.directory} does not fit this model and dataset: "
                f"{_describe_difference(expected, wanted)}; use another --workdir or drop --resume."
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))[
                "state"
            ]
        except Exception as error:  # The structure fits (checked above): a read failure is damage.
            raise CheckpointDamagedError(
                f"checkpoint {path} is damaged: its arrays cannot be read ({_first_line(error)})."
            ) from None
        actual = tree_checksums(restored)
        changed = sorted(k for k in checksums if actual.get(k, {}).get("sha256") != checksums[k].get("sha256"))
        if changed:
            raise CheckpointDamagedError(
                f"checkpoint {path} is damaged: {len(changed)} array(s) differ from their checksum at save "
                f"(first: {changed[0]})."
            )
        meta = {k: v for k, v in meta.items() if k not in (CHECKSUMS_KEY, META_CHECKSUM_KEY)}
        return restored, meta

    def restore_latest(self, target: Any, config, warn: Callable[[str], None]) -> Optional[tuple]:
        """``(step, tree, meta)`` of the newest intact, verified checkpoint; None when there is none.

        Each damaged checkpoint skipped on the way is reported through
        ``warn`` (one line naming its path). Once an older one restores, the
        damaged newer ones are moved to ``checkpoints-damaged/`` next to the
        checkpoint directory (kept for inspection; out of the way of the steps
        the run saves next).

        Raises:
          CheckpointMismatchError: a checkpoint written by another config or
            model (no fallback: resuming into it is the user's error).
          CheckpointDamagedError: every checkpoint is damaged (nothing is moved).
        """
        steps = self.all_steps()
        if not steps:
            return None
        damaged = []
        for step in reversed(steps):
            try:
                tree, meta = self.restore(step, target, config)
            except CheckpointDamagedError as error:
                warn(str(error))
                damaged.append(step)
                continue
            if damaged:
                moved = [self._move_aside(s) for s in damaged]
                warn(
                    f"resuming from the newest intact checkpoint {self.step_path(step)} "
                    f"instead; moved the damaged one(s) to {', '.join(moved)}."
                )
            return step, tree, meta
        raise CheckpointDamagedError(
            f"every checkpoint in {self.directory} is damaged (steps {', '.join(map(str, steps))}); "
            "drop --resume and use another --workdir to start afresh."
        )

    def _move_aside(self, step: int) -> str:
        parent = os.path.join(os.path.dirname(self.directory), DAMAGED_DIRNAME)
        os.makedirs(parent, exist_ok=True)
        destination, n = os.path.join(parent, str(step)), 1
        while os.path.exists(destination):
            destination, n = os.path.join(parent, f"{step}.{n}"), n + 1
        os.rename(self.step_path(step), destination)
        self.manager.reload()
        return destination

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> "RunCheckpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def config_to_json(config) -> dict:
    """The config as ``{"section.key": value}`` of JSON-compatible values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat_items(config).items()}


def _meta_checksum(meta: dict) -> str:
    """SHA-256 of the metadata's canonical JSON (sorted keys), its own checksum left out."""
    rest = {k: v for k, v in meta.items() if k != META_CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _addressable(leaf):
    """The leaf as this host can read it: one replica of a replicated multi-host array."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf.addressable_data(0)  # The run's state is replicated: every replica holds the same bytes.
    return leaf


def tree_checksums(tree: Any) -> dict:
    """``{leaf path: {"dtype", "shape", "sha256"}}`` of every leaf's bytes (C order)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    values = jax.device_get([_addressable(leaf) for _, leaf in flat])  # One transfer for the whole tree.
    out = {}
    for (path, _), value in zip(flat, values):
        value = np.asarray(value)
        out[jax.tree_util.keystr(path)] = {
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "sha256": hashlib.sha256(value.tobytes(order="C")).hexdigest(),
        }
    return out


def tree_signature(tree: Any) -> dict:
    """``{leaf path: (dtype, shape)}``, without reading the arrays' values."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not hasattr(leaf, "dtype"):
            leaf = np.asarray(leaf)
        out[jax.tree_util.keystr(path)] = (str(np.dtype(leaf.dtype)), list(np.shape(leaf)))
    return out


def _describe_difference(stored: dict, wanted: dict) -> str:
    missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
    if missing or extra:
        parts = ([f"{len(missing)} array(s) of the model missing (first: {missing[0]})"] if missing else []) + (
            [f"{len(extra)} stored array(s) not in the model (first: {extra[0]})"] if extra else []
        )
        return "; ".join(parts)
    key = sorted(k for k in wanted if stored[k] != wanted[k])[0]
    return f"{key} is stored as {stored[key][0]}{stored[key][1]}, the model has {wanted[key][0]}{wanted[key][1]}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    line = line.split(" See full TensorStore details")[0]
    return line if len(line) <= 200 else line[:197] + "..."
