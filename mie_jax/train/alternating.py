"""MIE's Algorithm 1 and its ablations: one classifier per modality, trained in turn.

Phase ``i`` trains modality ``j = i mod m`` (outer iteration ``i // m``) for
``phase_epochs`` epochs. With gradient modification, its head kernels'
gradients are multiplied by ``T`` built from the covariance of the modality
trained just before it (``j - 1`` cyclically; ``T = I`` in the very first
phase). After the phase, modality ``j``'s covariance is recomputed: by one
pass over its training data (``covariance="pass"``, the paper) or from the
phase's own steps (``"online"``).
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mie_jax
from mie_jax.models import Head, UnimodalClassifier
from mie_jax.models.encoders import build_encoder, encoder_names
from mie_jax.train import augment, batches, parallel, steps
from mie_jax.train.config import TrainConfig


def build_unimodal_classifier(config: TrainConfig, encoder_name: str, input_shape, num_classes: int,
                              rngs: nnx.Rngs, modality: str = ""):
    """The encoder ``encoder_name`` for ``modality``'s examples of ``input_shape``, to the common ``Dim``, and MIE's head."""
    encoder = build_encoder(config, encoder_name, input_shape, rngs, modality)
    return UnimodalClassifier(encoder, Head(config.dim, num_classes, rngs=rngs))


class AlternatingMethod:
    """``mie``, ``mie_no_sam``, ``mie_no_gm`` and ``unimodal``."""

    per_modality = True

    def __init__(self, config: TrainConfig, train_split, num_classes: int, mesh=None):
        self.config = config
        self.modalities = tuple(config.modalities)
        self.inputs = {m: jnp.asarray(train_split.inputs[m]) for m in self.modalities}
        self.labels = jnp.asarray(train_split.labels)
        augment.check_augmentable(config, self.inputs)
        self.mesh = mesh
        self.num_classes = num_classes
        self.tx = steps.make_optimizer(
            config, sam=config.uses_sam, steps_per_epoch=batches.steps_per_epoch(self.labels.shape[0], config.batch_size))
        self.graphdefs, self._initial = {}, {"params": {}, "model_state": {}}
        rngs = nnx.Rngs(config.seed)
        names = encoder_names(config, self.modalities)
        for m in self.modalities:
            model = build_unimodal_classifier(config, names[m], self.inputs[m].shape[1:], num_classes, rngs, m)
            self.graphdefs[m], self._initial["params"][m], self._initial["model_state"][m] = (
                steps.split_model(model)
            )
        online = config.covariance == "online" and config.uses_gradient_modification
        # Per-device SAM: one group per device of the mesh (one group without a mesh: global SAM).
        sam_groups = (mesh.size if mesh is not None else 1) if config.sam_per_device and config.uses_sam else 0
        self.phase_fns = {
            m: steps.make_phase_fn(
                g, self.tx, online_covariance=online, statistic=config.covariance_statistic, mesh=mesh,
                sam_groups=sam_groups,
            )
            for m, g in self.graphdefs.items()
        }
        self.covariance_passes = {
            m: steps.make_covariance_pass(g, statistic=config.covariance_statistic)
            for m, g in self.graphdefs.items()
        }
        self.predicts = {m: steps.make_predict(g) for m, g in self.graphdefs.items()}
        # One compiled program for the three eigendecompositions (2.7x faster than op by op).
        self.flat_transforms = jax.jit(lambda covariances: mie_jax.flat_transforms(covariances, config.tau))

    @property
    def num_phases(self) -> int:
        return self.config.outer_iterations * len(self.modalities)

    def phase_name(self, phase: int) -> str:
        return self.modalities[phase % len(self.modalities)]

    def init(self) -> dict:
        params = self._initial["params"]
        return {
            **self._initial,
            "opt_state": {m: self.tx.init(p) for m, p in params.items()},
            "covariance": {m: steps.zero_covariances(p) for m, p in params.items()},
        }

    def variables(self, state) -> Mapping[str, Any]:
        """What prediction needs: parameters and model state of every modality."""
        return {"params": state["params"], "model_state": state["model_state"]}

    def _transforms(self, state, phase: int, modality: str):
        if not self.config.uses_gradient_modification:
            return None
        params = state["params"][modality]
        if phase == 0:  # Nothing trained before: T = I (Algorithm 1's start).
            matrices = {l: jnp.eye(c.shape[0]) for l, c in state["covariance"][modality].items()}
            if self.mesh is not None:  # Placed like later T, so the phase compiles once, not twice.
                matrices = parallel.replicate(matrices, self.mesh)
        else:
            previous = self.modalities[(phase - 1) % len(self.modalities)]
            matrices = self.flat_transforms(state["covariance"][previous])
        return steps.head_kernel_tree(params, matrices)

    def run_phase(self, state, phase: int, best_variables=None):
        config = self.config
        m = self.phase_name(phase)
        params, model_state, opt_state = state["params"][m], state["model_state"][m], state["opt_state"][m]
        if config.reload_best_per_phase and best_variables is not None:
            params, model_state = best_variables["params"][m], best_variables["model_state"][m]
        if config.fresh_optimizer_per_phase:
            opt_state = self.tx.init(params)
        rng = batches.phase_rng(config.seed, phase)
        order = batches.epoch_batches(
            rng, self.labels.shape[0], config.batch_size, config.epochs_of_phase(phase)
        )
        lam, partners = batches.mixup_draws(rng, config.mixup_alpha, order.shape[0], config.batch_size)
        crop = augment.phase_crops(config, self.inputs, phase, order.shape, (m,)).get(m)
        online = steps.zero_covariances(params)
        params, model_state, opt_state, online, losses = self.phase_fns[m](
            params, model_state, opt_state, online, self.inputs[m], self.labels, order, lam, partners,
            self._transforms(state, phase, m), crops=crop,
        )
        covariance = state["covariance"][m]
        if config.uses_gradient_modification:
            if config.covariance == "online":
                covariance = online
            else:
                covariance = self.covariance_passes[m](
                    params, model_state, self.inputs[m], config.covariance_batch_size
                )
        state = {
            "params": {**state["params"], m: params},
            "model_state": {**state["model_state"], m: model_state},
            "opt_state": {**state["opt_state"], m: opt_state},
            "covariance": {**state["covariance"], m: covariance},
        }
        return state, {"losses": np.asarray(losses)}

    def logits(self, variables, inputs) -> dict:
        return {
            m: self.predicts[m](variables["params"][m], variables["model_state"][m], jnp.asarray(inputs[m]))
            for m in self.modalities
        }
