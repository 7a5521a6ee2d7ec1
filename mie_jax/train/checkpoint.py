"""Orbax checkpoints of a run: the method's state, the best parameters, and the history."""

import dataclasses
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


# Config keys that change where the computation runs, not what it computes:
# a checkpoint moves freely between their values (e.g. from 8 devices to 1).
LAYOUT_KEYS = ("num_devices",)


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir was written by a different configuration."""


class RunCheckpointer:
    """Saves after every phase, keeps the last ``max_to_keep``; each holds the best-so-far params.

    Orbax writes each step to a temporary directory and renames it when
    complete, so a run killed mid-save never restores a half-written step.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, tree: Any, meta: dict) -> None:
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, target: Any, config) -> tuple:
        """Restores ``(tree, meta)`` of ``step`` into the structure of ``target``.

        Raises:
          CheckpointMismatchError: the stored config differs from ``config``, or
            the stored arrays do not fit ``target`` (a different model or dataset).
        """
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        stored, current = meta["config"], config_to_json(config)
        differing = sorted(
            k for k in set(stored) | set(current)
            if k not in LAYOUT_KEYS and stored.get(k) != current.get(k)
        )
        if differing:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in differing)
            raise CheckpointMismatchError(
                f"checkpoint in {self.directory} was written with a different config ({details}); "
                "use another --workdir or drop --resume."
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )["state"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointMismatchError(
                f"checkpoint in {self.directory} does not fit this model and dataset: {error}"
            ) from None
        return restored, meta

    def close(self) -> None:
        self.manager.close()


def config_to_json(config) -> dict:
    """The config as JSON-compatible values (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }
