"""What the one-model methods share: joint, OGM-GE and MLA train one model, one epoch per phase."""

import jax.numpy as jnp
import numpy as np

from mie_jax.train import augment, batches, steps
from mie_jax.train.config import TrainConfig


class SingleModelMethod:
    """One model over all modalities; phase ``i`` is epoch ``i + 1`` over the paired data.

    Subclasses build ``self.model`` and ``self.tx`` in ``__init__`` after
    calling ``super().__init__``, then ``self._finish(model, tx)``, and provide
    ``_make_phase_fn`` returning a jitted ``(params, model_state, opt_state,
    inputs, labels, batch_indices, *extras, crops) -> (params, model_state,
    opt_state, losses)``; ``_phase_extras`` supplies the extras, and
    ``crops`` maps each augmented modality to its ``(boxes, flips)``.
    """

    def __init__(self, config: TrainConfig, train_split, mesh=None):
        self.config = config
        self.mesh = mesh
        self.modalities = tuple(config.modalities)
        self.inputs = {m: jnp.asarray(train_split.inputs[m]) for m in self.modalities}
        self.labels = jnp.asarray(train_split.labels)
        augment.check_augmentable(config, self.inputs)

    def _finish(self, model, tx):
        self.graphdef, params, model_state = steps.split_model(model)
        self._initial = {"params": params, "model_state": model_state}
        self.tx = tx
        self.phase_fn = self._make_phase_fn()

    @property
    def num_phases(self) -> int:
        return self.config.outer_iterations * self.config.phase_epochs

    def phase_name(self, phase: int) -> str:
        return f"epoch {phase + 1}"

    def init(self) -> dict:
        return {**self._initial, "opt_state": self.tx.init(self._initial["params"])}

    def variables(self, state):
        return {"params": state["params"], "model_state": state["model_state"]}

    def _phase_extras(self, rng, order) -> tuple:
        del rng, order
        return ()

    def run_phase(self, state, phase: int, best_variables=None):
        del best_variables  # One model trained throughout: no stages to restart.
        rng = batches.phase_rng(self.config.seed, phase)
        order = batches.epoch_batches(rng, self.labels.shape[0], self.config.batch_size, 1)
        params, model_state, opt_state, losses = self.phase_fn(
            state["params"], state["model_state"], state["opt_state"], self.inputs, self.labels, order,
            *self._phase_extras(rng, order),
            crops=augment.phase_crops(self.config, self.inputs, phase, order.shape, self.modalities),
        )
        state = {"params": params, "model_state": model_state, "opt_state": opt_state}
        return state, {"losses": np.asarray(losses)}
