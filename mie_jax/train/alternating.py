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
from mie_jax.train import augment, batches, feed, loop, parallel, steps
from mie_jax.train.config import TrainConfig


def build_unimodal_classifier(
    config: TrainConfig, encoder_name: str, input_shape, num_classes: int, rngs: nnx.Rngs, modality: str = ""
):
    """The encoder ``encoder_name`` for ``modality``'s examples of ``input_shape``, to ``Dim``, and MIE's head."""
    encoder = build_encoder(config, encoder_name, input_shape, rngs, modality)
    return UnimodalClassifier(encoder, Head(config.dim, num_classes, rngs=rngs))


class AlternatingMethod:
    """``mie``, ``mie_no_sam``, ``mie_no_gm`` and ``unimodal``."""

    per_modality = True

    def __init__(self, config: TrainConfig, train_split, num_classes: int, mesh=None):
        self.config = config
        self.modalities = tuple(config.modalities)
        self.inputs = {m: train_split.inputs[m] for m in self.modalities}  # Host columns, read batch by batch.
        self.labels = np.asarray(train_split.labels, np.int32)
        augment.check_augmentable(config, self.inputs)
        self.mesh = mesh
        self.num_classes = num_classes
        self.steps_per_epoch = batches.steps_per_epoch(len(self.labels), config.batch_size)
        self.tx = steps.make_optimizer(config, sam=config.uses_sam, steps_per_epoch=self.steps_per_epoch)
        self.graphdefs, self._initial = {}, {"params": {}, "model_state": {}}
        rngs = nnx.Rngs(config.seed)
        names = encoder_names(config, self.modalities)
        for m in self.modalities:
            model = build_unimodal_classifier(config, names[m], self.inputs[m].shape[1:], num_classes, rngs, m)
            self.graphdefs[m], self._initial["params"][m], self._initial["model_state"][m] = steps.split_model(model)
        self.online = config.covariance == "online" and config.uses_gradient_modification
        # Per-device SAM: one group per device of the mesh (one group without a mesh: global SAM).
        sam_groups = (mesh.size if mesh is not None else 1) if config.sam_per_device and config.uses_sam else 0
        self.train_steps = {
            m: steps.make_train_step(
                g,
                self.tx,
                m,
                online_covariance=self.online,
                statistic=config.covariance_statistic,
                mesh=mesh,
                sam_groups=sam_groups,
            )
            for m, g in self.graphdefs.items()
        }
        self.chunk_runners = {m: loop.chunk_runner(step) for m, step in self.train_steps.items()}
        self.covariance_passes = {
            m: steps.make_covariance_pass(g, statistic=config.covariance_statistic) for m, g in self.graphdefs.items()
        }
        self.predicts = {m: steps.make_predict(g) for m, g in self.graphdefs.items()}
        # One compiled program for the three eigendecompositions (2.7x faster than op by op).
        rank = config.gm_rank or None
        self.flat_transforms = jax.jit(
            lambda covariances: mie_jax.flat_transforms(
                covariances, config.tau, rank, config.gm_tol if rank else None, solver=config.gm_solver
            )
        )

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
        if phase == 0:  # Nothing trained before: T = I (Algorithm 1's start), in the form later phases use.
            rank = self.config.gm_rank
            matrices = {
                layer: mie_jax.LowRankTransform.identity(c.shape[0], min(rank, c.shape[0]))
                if rank
                else jnp.eye(c.shape[0])
                for layer, c in state["covariance"][modality].items()
            }
            if self.mesh is not None:  # Placed like later T, so the phase compiles once, not twice.
                matrices = parallel.replicate(matrices, self.mesh)
        else:
            previous = self.modalities[(phase - 1) % len(self.modalities)]
            matrices = self.flat_transforms(state["covariance"][previous])
        return steps.head_kernel_tree(params, matrices)

    def draws(self, phase: int) -> feed.StepDraws:
        """The phase's batch order, mixup draws and crops: a pure function of (seed, phase)."""
        config, m = self.config, self.phase_name(phase)
        rng = batches.phase_rng(config.seed, phase)
        order = batches.epoch_batches(rng, len(self.labels), config.batch_size, config.epochs_of_phase(phase))
        lam, partners = batches.mixup_draws(rng, config.mixup_alpha, order.shape[0], config.batch_size)
        return feed.StepDraws(order, lam, partners, augment.phase_crops(config, self.inputs, phase, order.shape, (m,)))

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False) -> loop.PhasePlan:
        """Phase ``phase``'s plan; ``inside``: continue from the carry that :meth:`state_inside` stored."""
        config = self.config
        m = self.phase_name(phase)
        params, model_state, opt_state = state["params"][m], state["model_state"][m], state["opt_state"][m]
        online = state["covariance"][m] if inside and self.online else steps.zero_covariances(params)
        if not inside:  # The released code's stage restart (skipped when resuming inside the stage).
            if config.reload_best_per_phase and best_variables is not None:
                params, model_state = best_variables["params"][m], best_variables["model_state"][m]
            if config.fresh_optimizer_per_phase:
                opt_state = self.tx.init(params)
        return loop.PhasePlan(
            self.chunk_runners[m],
            self._transforms(state, phase, m),
            (params, model_state, opt_state, online),
            self.draws(phase),
            {m: self.inputs[m]},
            self.labels,
            self.steps_per_epoch,
        )

    def state_inside(self, state, phase: int, carry) -> dict:
        """``state`` with the phase's carry in its modality's place: what a checkpoint inside a phase holds.

        The phase's online covariance sum takes the modality's covariance slot,
        which the phase's end overwrites anyway.
        """
        m = self.phase_name(phase)
        params, model_state, opt_state, online = carry
        return {
            "params": {**state["params"], m: params},
            "model_state": {**state["model_state"], m: model_state},
            "opt_state": {**state["opt_state"], m: opt_state},
            "covariance": {**state["covariance"], m: online if self.online else state["covariance"][m]},
        }

    def finish_phase(self, state, phase: int, carry) -> dict:
        """The state after the phase: its carry, and the modality's covariance (Eq. 5) recomputed."""
        config, m = self.config, self.phase_name(phase)
        state = self.state_inside(state, phase, carry)
        params, model_state = carry[0], carry[1]
        if config.uses_gradient_modification and config.covariance == "pass":
            group = max(1, config.eval_batch_size // config.covariance_batch_size)
            covariance = self.covariance_passes[m](
                params, model_state, self.inputs[m], config.covariance_batch_size, group
            )
            state = {**state, "covariance": {**state["covariance"], m: covariance}}
        return state

    def logits(self, variables, inputs) -> dict:
        """Every modality's logits over a split's columns, ``eval_batch_size`` rows at a time (host arrays)."""
        return {
            m: feed.map_batches(
                lambda batch, m=m: self.predicts[m](variables["params"][m], variables["model_state"][m], batch[m]),
                {m: inputs[m]},
                self.config.eval_batch_size,
                self.mesh,
            )
            for m in self.modalities
        }
