"""MSLR: additive late fusion trained jointly, each modality's branch with its own learning rate.

The model is one classifier per modality (encoder and head) whose logits are
summed, ``f(x) = sum_k f_k(x_k)``; one cross-entropy on the sum trains all of
them. Branch ``k``'s update is the optimizer's update scaled by
``r_k / optimizer.learning_rate``, so with SGD (momentum, weight decay) or
Adam it is exactly the update at learning rate ``r_k``, under the same
schedule. ``keep`` trains with ``r_k`` fixed at ``mslr.learning_rates[k]``
(the rate modality ``k``'s unimodal model was tuned with; ``optimizer.learning_rate``
where none is given). ``dynamic`` also holds out ``mslr.holdout_fraction`` of
the training split (drawn with the seed), measures each branch's accuracy on
it after every epoch, and every ``history_length`` epochs multiplies
``r_k`` by that branch's latest accuracy over its mean across the window,
``r_k <- r_k * a_k[t] / mean_{s in window} a_k[s]``: a branch still improving
speeds up, one falling back slows down. The prediction is the summed logits
(``joint``).

Fidelity:
  The paper's text (Findings of ACL 2022) could not be read here: only its
  abstract was available, which says that the late-fusion model is built
  from fine-tuned unimodal models and that three strategies assign the
  per-modality rates. No code of the authors was found. ``keep`` is the
  abstract's premise (each modality trains at its unimodal rate); the
  ``dynamic`` rule is that of the one public reimplementation found (a
  third-party "implemented by ourself, based on the paper" trainer: window
  and period ``history_length = 5``, per-modality validation accuracy), not
  checked against the paper. The paper's ``smooth`` strategy is not
  implemented, for want of its definition. The branches start from this
  run's initialisation (or ``model.encoder_weights``), not from separately
  fine-tuned unimodal models; the logits are summed, as the abstract's
  "sum of unimodal predictions" says (``joint.fusion="average"`` is the mean).

References:
  Yao and Mihalcea, `Modality-specific Learning Rates for Effective
  Multimodal Additive Late-fusion <https://aclanthology.org/2022.findings-acl.143>`_,
  Findings of ACL 2022.
"""

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mie_jax.models.encoders import build_unimodal_classifier, encoder_names
from mie_jax.train import augment, batches, feed, options, registry, steps
from mie_jax.train.methods.single_model import SingleModelMethod, step_inputs

STRATEGIES = ("keep", "dynamic")


def dynamic_rates(rates, window):
    """``dynamic``'s update: each rate times its modality's latest accuracy over the window's mean accuracy.

    Args:
      rates: ``[M]`` the current per-modality learning rates.
      window: ``[H, M]`` each modality's held-out accuracy over the last ``H``
        epochs, the latest last.

    Returns:
      ``[M]`` the new rates ``rates * window[-1] / mean(window, axis=0)``; a
      modality never right over the window keeps its rate.

    Raises:
      ValueError: ``rates`` is not ``[M]`` or ``window`` not ``[H, M]`` with ``H >= 1``.
    """
    if jnp.ndim(rates) != 1 or jnp.ndim(window) != 2 or jnp.shape(window)[1:] != jnp.shape(rates):
        raise ValueError(
            f"rates must be [modalities] and window [epochs, modalities], got {jnp.shape(rates)} and "
            f"{jnp.shape(window)}."
        )
    if jnp.shape(window)[0] < 1:
        raise ValueError(f"window must hold at least one epoch, got shape {jnp.shape(window)}.")
    mean = jnp.mean(window, axis=0)
    return jnp.where(mean > 0, rates * window[-1] / jnp.where(mean > 0, mean, 1.0), rates)


def scale_by_modality_rate(base_rate: float) -> optax.GradientTransformationExtraArgs:
    """Scales branch ``k``'s updates by ``rates[k] / base_rate``; ``rates`` comes as ``update(..., rates=)``.

    Placed after an optimizer built with learning rate ``base_rate``, it
    turns that optimizer's update into the one at learning rate
    ``rates[k]`` for every parameter under ``updates["branches"][k]``
    (branches in sorted order), exactly for SGD and Adam, whose updates are
    linear in the rate.

    Args:
      base_rate: the learning rate the preceding optimizer was built with.

    Raises:
      ValueError: ``base_rate`` is not a positive finite number.
    """
    if not (math.isfinite(base_rate) and base_rate > 0):
        raise ValueError(f"base_rate must be a positive finite number, got {base_rate}.")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, rates, **extra_args):
        del params, extra_args  # Meant for other transforms of the chain.
        names = sorted(updates["branches"])
        if jnp.shape(rates) != (len(names),):
            raise ValueError(f"rates must be [{len(names)}] (one per branch {names}), got {jnp.shape(rates)}.")
        branches = {
            name: jax.tree.map(lambda u, s=rates[i] / base_rate: u * s.astype(u.dtype), updates["branches"][name])
            for i, name in enumerate(names)
        }
        return {**updates, "branches": branches}, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class MSLROptions:
    """The ``mslr`` section.

    Attributes:
      strategy: ``keep`` (each modality's rate fixed) or ``dynamic``
        (rescaled by held-out accuracy every ``history_length`` epochs).
      learning_rates: ``{modality: rate}``, each modality's starting rate
        (``--set mslr.learning_rates=fac=0.01,mor=0.1``); a modality not
        named starts at ``optimizer.learning_rate``.
      history_length: ``dynamic``'s window of epochs and its update period.
      holdout_fraction: ``dynamic``: the share of the training split held out
        to measure each branch's accuracy (drawn with the seed; not trained on).
    """

    strategy: str = options.choice("keep", STRATEGIES)
    learning_rates: Mapping[str, float] = dataclasses.field(default_factory=dict)
    history_length: int = options.whole(5, 1)
    holdout_fraction: float = options.number(0.1, ("(", 0.0), (")", 1.0))

    def __post_init__(self):
        options.validate("mslr.", self)
        if not isinstance(self.learning_rates, Mapping):
            raise ValueError(f"mslr.learning_rates must map modalities to rates, got {self.learning_rates!r}.")
        rates = {}
        for name, value in self.learning_rates.items():
            try:
                rate = float(value)
            except (TypeError, ValueError):
                rate = math.nan
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"mslr.learning_rates[{name!r}] must be a positive finite number, got {value!r}.")
            rates[name] = rate
        object.__setattr__(self, "learning_rates", rates)


class AdditiveLateFusion(nnx.Module):
    """Per-modality classifiers whose logits are summed; returns the sum and ``{modality: logits}``."""

    def __init__(self, branches: Mapping[str, nnx.Module]):
        self.branches = nnx.Dict(branches)

    def __call__(self, inputs: Mapping[str, jnp.ndarray], *, train: bool = False):
        logits = {name: self.branches[name](inputs[name], train=train)[0] for name in sorted(inputs)}
        return sum(logits.values()), logits


class MSLRMethod(SingleModelMethod):
    """``mslr``: one late-fusion model, a learning rate per modality in ``state["rates"]``, one epoch per phase."""

    per_modality = False

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        super().__init__(config, train_split, mesh)
        self.options = config.mslr
        unknown = sorted(set(self.options.learning_rates) - set(self.modalities))
        if unknown:
            raise ValueError(
                f"mslr.learning_rates names {unknown}, not modalities of this run {list(self.modalities)}."
            )
        self.branch_names = tuple(sorted(self.modalities))
        self.dynamic = self.options.strategy == "dynamic"
        self.train_rows = np.arange(len(self.labels))
        if self.dynamic:
            self.train_rows, self.holdout_rows = batches.holdout_split(
                len(self.labels), self.options.holdout_fraction, config.seed, "mslr.holdout_fraction"
            )
        self.steps_per_epoch = batches.steps_per_epoch(len(self.train_rows), config.train.batch_size)
        rngs = nnx.Rngs(config.seed)
        names = encoder_names(config, self.modalities)
        model = AdditiveLateFusion(
            {
                m: build_unimodal_classifier(config, names[m], self.inputs[m].shape[1:], num_classes, rngs, m)
                for m in self.modalities
            }
        )
        base = config.optimizer.learning_rate
        tx = optax.chain(
            steps.make_optimizer(config.optimizer, steps_per_epoch=self.steps_per_epoch),
            scale_by_modality_rate(base),
        )
        self._finish(model, tx)
        graphdef = self.graphdef

        @jax.jit
        def branch_correct(params, model_state, inputs, labels, real):
            per_modality = steps.apply_model(graphdef, params, model_state, inputs, train=False)[0][1]
            stacked = jnp.stack([per_modality[m] for m in self.branch_names])
            return jnp.sum((jnp.argmax(stacked, axis=-1) == labels) * real, axis=1)

        self.branch_correct = branch_correct
        self.initial_rates = np.array([self.options.learning_rates.get(m, base) for m in self.branch_names], np.float32)

    def _make_step(self):
        graphdef, tx, mesh = self.graphdef, self.tx, self.mesh

        def step(rates, carry, batch):
            params, model_state, opt_state = carry
            xs, y = step_inputs(batch, mesh)

            def loss_fn(p):
                (logits, _), new_state = steps.apply_model(graphdef, p, model_state, xs, train=True)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

            params, opt_state, loss, model_state = steps.optimizer_step(loss_fn, tx, params, opt_state, rates=rates)
            return (params, model_state, opt_state), loss

        return step

    def draws(self, phase: int) -> feed.StepDraws:
        """The epoch over the rows trained on (all of the split but ``dynamic``'s held-out part)."""
        rng = batches.phase_rng(self.config.seed, phase)
        batch_size = self.config.train.batch_size
        order = self.train_rows[batches.epoch_batches(rng, len(self.train_rows), batch_size, 1)]
        lam, partners = batches.mixup_draws(rng, 0.0, order.shape[0], batch_size)
        crops = augment.phase_crops(self.config, self.inputs, phase, order.shape, self.modalities)
        return feed.StepDraws(order, lam, partners, crops)

    def init(self) -> dict:
        state = {**super().init(), "rates": jnp.asarray(self.initial_rates)}
        if self.dynamic:
            state["window"] = jnp.zeros((self.options.history_length, len(self.branch_names)), jnp.float32)
        return state

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False):
        return super().phase_plan(state, phase, best_variables, inside=inside)._replace(constants=state["rates"])

    def state_inside(self, state, phase: int, carry) -> dict:
        kept = {k: state[k] for k in ("rates", "window") if k in state}
        return {**super().state_inside(state, phase, carry), **kept}

    def finish_phase(self, state, phase: int, carry) -> dict:
        state = self.state_inside(state, phase, carry)
        if not self.dynamic:
            return state
        length = self.options.history_length
        window = np.asarray(state["window"]).copy()
        window[phase % length] = self.holdout_accuracies(state["params"], state["model_state"])
        state = {**state, "window": jnp.asarray(window)}
        if (phase + 1) % length == 0:  # The window holds epochs phase - H + 1 .. phase, the latest last.
            state["rates"] = jnp.asarray(dynamic_rates(np.asarray(state["rates"]), window), jnp.float32)
        return state

    def holdout_accuracies(self, params, model_state) -> np.ndarray:
        """``[M]`` each branch's accuracy on the held-out rows (branches in sorted order)."""
        correct = np.zeros(len(self.branch_names))
        rows = self.holdout_rows
        for batch_rows, count in feed.batched_rows(len(rows), self.config.train.eval_batch_size):
            picked = rows[batch_rows]
            inputs = {m: feed.put_rows(np.asarray(self.inputs[m][picked]), self.mesh) for m in self.modalities}
            real = (np.arange(len(batch_rows)) < count).astype(np.float32)
            correct += np.asarray(self.branch_correct(params, model_state, inputs, self.labels[picked], real))
        return correct / len(rows)


registry.register(
    registry.MethodSpec(
        "mslr",
        MSLRMethod,
        "additive late fusion (summed per-modality logits) with a learning rate per modality (MSLR)",
        {"mslr": MSLROptions},
        (registry.ReportRow("MSLR (keep)"),),
        "Yao and Mihalcea, Findings of ACL 2022",
    )
)
