"""MLA: per-batch alternation of modalities over one shared head (a peer baseline).

Each step takes one batch and updates the model once per modality, in turn,
with that modality's loss through the shared head. The head kernels' gradients
pass through :func:`mie_jax.orthogonal_projection`, whose projections are
updated from each step's head-layer inputs, with OWM's ``alpha = base ** (1 +
batch / batches_per_epoch)``. One phase is one epoch; at test time the
per-modality predictions are fused (MLA uses the entropy-weighted fusion).

References:
  Zhang, Latham and Yao, `Multimodal Representation Learning by Alternating
  Unimodal Adaptation <https://arxiv.org/abs/2311.10707>`_, CVPR 2024.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mie_jax
from mie_jax.models import Head, SharedHeadClassifier
from mie_jax.models.encoders import build_encoder, encoder_names
from mie_jax.models.head import HEAD_LAYERS
from mie_jax.train import batches, parallel, steps
from mie_jax.train.config import TrainConfig


class SharedHeadMethod:
    """``mla``."""

    per_modality = True

    def __init__(self, config: TrainConfig, train_split, num_classes: int, mesh=None):
        self.config = config
        self.mesh = mesh
        self.modalities = tuple(config.modalities)
        self.inputs = {m: jnp.asarray(train_split.inputs[m]) for m in self.modalities}
        self.labels = jnp.asarray(train_split.labels)
        rngs = nnx.Rngs(config.seed)
        names = encoder_names(config, self.modalities)
        encoders = {m: build_encoder(config, names[m], self.inputs[m].shape[1:], rngs) for m in self.modalities}
        model = SharedHeadClassifier(encoders, Head(config.dim, num_classes, rngs=rngs))
        self.graphdef, params, model_state = steps.split_model(model)
        self._initial = {"params": params, "model_state": model_state}
        self.steps_per_epoch = self.labels.shape[0] // config.batch_size
        projection = None
        if config.mla_projection:
            m, per_epoch, base = len(self.modalities), self.steps_per_epoch, config.mla_alpha_base
            mask = steps.head_kernel_tree(params, {l: True for l in HEAD_LAYERS})
            mask = jax.tree.map(lambda leaf: leaf is True, mask, is_leaf=lambda x: x is None)
            projection = mie_jax.orthogonal_projection(
                # One update per modality per batch: count // m is the batch number.
                alpha=lambda count: base ** (1.0 + ((count // m) % per_epoch) / per_epoch),
                mask=mask,
            )
        self.tx = steps.make_optimizer(config, sam=False, projection=projection)
        self.predicts = {m: steps.make_predict(self.graphdef, modality=m) for m in self.modalities}
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

    def _make_phase_fn(self):
        graphdef, tx, modalities = self.graphdef, self.tx, self.modalities
        project, mesh = self.config.mla_projection, self.mesh

        @jax.jit
        def phase(params, model_state, opt_state, inputs, labels, batch_indices):
            def step(carry, indices):
                params, model_state, opt_state = carry

                def features_of(aux):
                    return {"features": steps.head_kernel_tree(params, jax.lax.stop_gradient(aux[0]))}

                y = parallel.shard_batch(labels[indices], mesh)
                losses = []
                for m in modalities:
                    x = parallel.shard_batch(inputs[m][indices], mesh)

                    def loss_fn(p, x=x, m=m, model_state=model_state):
                        (logits, layer_inputs), new_state = steps.apply_model(
                            graphdef, p, model_state, x, m, train=True
                        )
                        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                        return loss, (layer_inputs, new_state)

                    params, opt_state, loss, (_, model_state) = steps.optimizer_step(
                        loss_fn, tx, params, opt_state,
                        extra_args_from_aux=features_of if project else None,
                    )
                    losses.append(loss)
                return (params, model_state, opt_state), jnp.mean(jnp.stack(losses))

            (params, model_state, opt_state), losses = jax.lax.scan(
                step, (params, model_state, opt_state), batch_indices
            )
            return params, model_state, opt_state, losses

        return phase

    def run_phase(self, state, phase: int, best_variables=None):
        del best_variables  # MLA has no stages to restart.
        rng = batches.phase_rng(self.config.seed, phase)
        order = batches.epoch_batches(rng, self.labels.shape[0], self.config.batch_size, 1)
        params, model_state, opt_state, losses = self.phase_fn(
            state["params"], state["model_state"], state["opt_state"], self.inputs, self.labels, order
        )
        state = {"params": params, "model_state": model_state, "opt_state": opt_state}
        return state, {"losses": np.asarray(losses)}

    def logits(self, variables, inputs) -> dict:
        return {
            m: self.predicts[m](variables["params"], variables["model_state"], jnp.asarray(inputs[m]))
            for m in self.modalities
        }
