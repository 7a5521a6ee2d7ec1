"""What the one-model methods share: joint, OGM-GE and MLA train one model, one epoch per phase."""

import numpy as np

from mie_jax.train import augment, batches, feed, loop, parallel, steps


def step_inputs(batch: feed.Batch, mesh=None):
    """A one-model step's ``(inputs, labels)``: every modality augmented by its crops, split over ``mesh``."""
    xs = {m: augment.apply(batch.inputs[m], batch.crops.get(m)) for m in batch.inputs}
    return parallel.shard_batch((xs, batch.labels), mesh)


class SingleModelMethod:
    """One model over all modalities; phase ``i`` is epoch ``i + 1`` over the paired data.

    Subclasses build the model and the optimizer in ``__init__`` after calling
    ``super().__init__``, then call ``self._finish(model, tx)``, and provide
    ``_make_step`` returning ``step(constants, carry, batch) -> (carry, loss)``
    with ``carry = (params, model_state, opt_state)`` and ``batch`` a
    :class:`~mie_jax.train.feed.Batch` over every modality;
    ``_phase_keys`` may supply per-step PRNG keys.
    """

    def __init__(self, config, train_split, mesh=None):
        self.config = config
        self.mesh = mesh
        self.modalities = tuple(config.modalities)
        self.inputs = {m: train_split.inputs[m] for m in self.modalities}  # Host columns, read batch by batch.
        self.labels = np.asarray(train_split.labels, np.int32)
        self.steps_per_epoch = batches.steps_per_epoch(len(self.labels), config.train.batch_size)
        augment.check_augmentable(config, self.inputs)

    def _finish(self, model, tx):
        self.graphdef, params, model_state = steps.split_model(model)
        self._initial = {"params": params, "model_state": model_state}
        self.tx = tx
        self.train_step = self._make_step()
        self.run_chunk = loop.chunk_runner(self.train_step)
        # The model's own output; a subclass predicting otherwise (G-Blend: its fused head) replaces it.
        self.predict = steps.make_predict(self.graphdef)

    @property
    def num_phases(self) -> int:
        return self.config.train.outer_iterations * self.config.train.phase_epochs

    def phase_name(self, phase: int) -> str:
        return f"epoch {phase + 1}"

    def init(self) -> dict:
        return {**self._initial, "opt_state": self.tx.init(self._initial["params"])}

    def variables(self, state):
        return {"params": state["params"], "model_state": state["model_state"]}

    def _phase_keys(self, rng, num_steps: int):
        del rng, num_steps
        return None

    def draws(self, phase: int) -> feed.StepDraws:
        """The epoch's batch order, crops and keys: a pure function of (seed, phase); no mixup."""
        rng = batches.phase_rng(self.config.seed, phase)
        batch_size = self.config.train.batch_size
        order = batches.epoch_batches(rng, len(self.labels), batch_size, 1)
        lam, partners = batches.mixup_draws(rng, 0.0, order.shape[0], batch_size)
        crops = augment.phase_crops(self.config, self.inputs, phase, order.shape, self.modalities)
        return feed.StepDraws(order, lam, partners, crops, self._phase_keys(rng, order.shape[0]))

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False) -> loop.PhasePlan:
        del best_variables, inside  # One model trained throughout: no stages to restart.
        carry = (state["params"], state["model_state"], state["opt_state"])
        return loop.PhasePlan(
            self.run_chunk, None, carry, self.draws(phase), self.inputs, self.labels, self.steps_per_epoch
        )

    def state_inside(self, state, phase: int, carry) -> dict:
        del state, phase
        params, model_state, opt_state = carry
        return {"params": params, "model_state": model_state, "opt_state": opt_state}

    def finish_phase(self, state, phase: int, carry) -> dict:
        return self.state_inside(state, phase, carry)

    def logits(self, variables, inputs) -> dict:
        """The one prediction ``joint`` over a split's columns, ``eval_batch_size`` rows at a time (host arrays).

        Per-modality subclasses (MLA) override it.
        """
        columns = {m: inputs[m] for m in self.modalities}
        predict = lambda batch: self.predict(variables["params"], variables["model_state"], batch)  # noqa: E731
        return {"joint": feed.map_batches(predict, columns, self.config.train.eval_batch_size, self.mesh)}
