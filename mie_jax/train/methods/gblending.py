"""Gradient-Blending (G-Blend): per-modality heads and a fused head, their losses blended by OGR weights.

Every modality's encoder feeds its own head and, concatenated with the
others, the fused head (the paper's Fig. 2c); a step minimises
``L_blend = sum_k w_k L_k`` (Eq. 7) over the ``k + 1`` heads' cross-entropies.
The weights minimise the overfitting-to-generalisation ratio (Eqs. 3-6): on a
held-out part ``V`` of the training split (``gblending.holdout_fraction``,
drawn with the seed; the model never trains on it), each head is trained
alone for ``n`` epochs from the current checkpoint ``N`` (Algorithm 1), and

  ``dG_k = L^V_N - L^V_{N+n}``, ``dO_k = (L^V_{N+n} - L^T_{N+n}) - (L^V_N - L^T_N)``,
  ``w_k = (dG_k / dO_k^2) / sum_j (dG_j / dO_j^2)``,

with ``L^T`` the head's mean loss on the training part ``T`` (or a subset
``T'`` of it). ``online`` (Algorithm 3) re-estimates the weights at the start
of every super-epoch (``first_super_epoch`` epochs, then ``super_epoch``),
from the checkpoint there, over that super-epoch's length; ``offline``
(Algorithm 2) estimates them once, from the initial model, over the whole
run. The prediction is the fused head's (``joint``).

Fidelity:
  * Eq. 6 prints ``Z = sum_k <grad L*, v_k> / (2 sigma_k^2)``, with which the
    weights would sum to 2 against the Proposition's own constraint
    ``sum_k w_k = 1``; we normalise to 1, as Algorithm 1 does.
  * The paper lets ``w_k`` be any real; a head whose held-out loss rose gets
    a negative weight (``gain="signed"``, the default). BalanceBenchmark's
    GBlending trainer uses ``|dG_k|`` (``gain="abs"``).
  * BalanceBenchmark's GBlending trainer measures after the first and the
    last estimation epoch (``n - 1`` epochs apart, not ``n`` from the
    checkpoint), ``L^T`` as the sum of that epoch's running batch losses and
    ``L^V`` as a sum over the batches of the benchmark's validation split
    (two different scales in one ``O``), with one super-epoch length and no
    warm-up. We follow Sec. 2.4 and Algorithm 1: mean losses of the
    checkpoints ``N`` and ``N + n``, in evaluation mode, on ``T'`` and on
    ``V`` held out of the training split. The authors' released code
    (facebookresearch/VMZ) takes the weights as fixed settings and has no
    estimation.
  * Each head's estimation run starts from the checkpoint with a fresh
    optimizer state ("initialize ... from corresponding parameters in
    phi_N") and batch orders of its own stream; the sum of a modality's
    per-modality and fused-head losses reaches its encoder, as in Fig. 2c.
  * A last super-epoch cut short by the run's end is estimated over the
    epochs it has.
  * ``measure="accuracy"`` computes ``dG`` and ``dO`` from error rates,
    Sec. 2.4's "accuracy metric" in place of the loss.

References:
  Wang, Tran and Feiszli, `What Makes Training Multi-modal Classification
  Networks Hard? <https://arxiv.org/abs/1905.12681>`_, CVPR 2020.
"""

import dataclasses
from typing import Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mie_jax.models import Head
from mie_jax.models.encoders import build_encoders
from mie_jax.train import augment, batches, feed, loop, options, registry, steps
from mie_jax.train.methods.single_model import SingleModelMethod, step_inputs

FUSED = "fused"  # The fused head's name among the heads (after the modalities).
GAINS = ("signed", "abs")
# batches.phase_rng streams: 0 orders the main training, 1 the crops; head k's estimation epochs use 2 + k.
_ESTIMATION_STREAM = 2


def generalization_and_overfitting(train_before, holdout_before, train_after, holdout_after):
    """Eq. 3's generalisation gain ``dG`` and overfitting change ``dO`` between checkpoints ``N`` and ``N + n``.

    All arguments are losses of the same heads (any shape, e.g. ``[k + 1]``),
    ``L^V`` approximating the true loss ``L*``.

    Args:
      train_before: ``L^T_N``, the training loss at ``N``.
      holdout_before: ``L^V_N``, the held-out loss at ``N``.
      train_after: ``L^T_{N+n}``.
      holdout_after: ``L^V_{N+n}``.

    Returns:
      ``(dG, dO)`` with ``dG = L^V_N - L^V_{N+n}`` and ``dO = O_{N+n} - O_N``,
      ``O = L^V - L^T``.

    Raises:
      ValueError: the four do not have one shape.

    References:
      Wang et al., CVPR 2020, Sec. 2.2, Eq. 3.
    """
    shapes = {jnp.shape(x) for x in (train_before, holdout_before, train_after, holdout_after)}
    if len(shapes) != 1:
        raise ValueError(f"losses must have one shape, got shapes {sorted(shapes)}.")
    gain = holdout_before - holdout_after
    overfitting = (holdout_after - train_after) - (holdout_before - train_before)
    return gain, overfitting


def blending_weights(gain, overfitting, *, gain_sign: str = "signed"):
    """The loss weights that minimise OGR^2: ``w_k = (dG_k / dO_k^2) / sum_j (dG_j / dO_j^2)``.

    Args:
      gain: ``[H]`` each head's generalisation gain ``dG_k`` (Eq. 3).
      overfitting: ``[H]`` each head's overfitting change ``dO_k``.
      gain_sign: ``signed`` (the paper: ``dG_k`` as it is) or ``abs``
        (BalanceBenchmark: ``|dG_k|``).

    Returns:
      ``[H]`` weights summing to 1 (non-finite where a ``dO_k`` is 0 or the
      sum is 0).

    Raises:
      ValueError: not two ``[H]`` arrays with ``H >= 1``, or an unknown ``gain_sign``.

    References:
      Wang et al., CVPR 2020, Proposition 1 (Eq. 6) and Algorithm 1.
    """
    if gain_sign not in GAINS:
        raise ValueError(f"gain_sign must be one of {list(GAINS)}, got {gain_sign!r}.")
    if jnp.ndim(gain) != 1 or jnp.shape(gain) != jnp.shape(overfitting) or jnp.shape(gain)[0] < 1:
        raise ValueError(
            f"gain and overfitting must both be [heads] with heads >= 1, got {jnp.shape(gain)} and "
            f"{jnp.shape(overfitting)}."
        )
    numerator = jnp.abs(gain) if gain_sign == "abs" else gain
    ratios = numerator / jnp.square(overfitting)
    return ratios / jnp.sum(ratios)


def super_epochs(num_epochs: int, first: int, length: int) -> Tuple[Tuple[int, int], ...]:
    """Online G-Blend's super-epochs: ``(first epoch, epochs)`` of each, the first ``first`` long, then ``length``.

    The last is cut at ``num_epochs``.

    Raises:
      ValueError: ``num_epochs``, ``first`` or ``length`` below 1.

    References:
      Wang et al., CVPR 2020, Algorithm 3 and Sec. 3.3 (a first super-epoch of 10, then 5).
    """
    for name, value in (("num_epochs", num_epochs), ("first", first), ("length", length)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    spans, start, size = [], 0, first
    while start < num_epochs:
        spans.append((start, min(size, num_epochs - start)))
        start, size = start + size, length
    return tuple(spans)


@dataclasses.dataclass(frozen=True)
class GBlendingOptions:
    """The ``gblending`` section.

    Attributes:
      mode: ``online`` (Algorithm 3: weights re-estimated every super-epoch)
        or ``offline`` (Algorithm 2: once, from the initial model, over the run).
      first_super_epoch: epochs of the first (warm-up) super-epoch, online
        (the paper's 10).
      super_epoch: epochs of every later super-epoch, online: the ``n`` of the
        estimation (the paper's 5).
      holdout_fraction: the share of the training split held out as ``V`` to
        measure generalisation (drawn with the seed; not trained on).
      train_measure_size: rows of the training part ``T`` whose loss is
        ``L^T`` (a seeded subset ``T'``, Sec. 2.4); 0: all of ``T``.
      measure: ``loss`` (cross-entropy) or ``accuracy`` (error rate), what
        ``dG`` and ``dO`` are measured in (Sec. 2.4).
      gain: ``signed`` (Eq. 6) or ``abs`` (BalanceBenchmark's ``|dG|``).
    """

    mode: str = options.choice("online", ("online", "offline"))
    first_super_epoch: int = options.whole(10, 1)
    super_epoch: int = options.whole(5, 1)
    holdout_fraction: float = options.number(0.1, ("(", 0.0), (")", 1.0))
    train_measure_size: int = options.whole(0, 0, "0: all of the training part")
    measure: str = options.choice("loss", ("loss", "accuracy"))
    gain: str = options.choice("signed", GAINS)

    def __post_init__(self):
        options.validate("gblending.", self)


class BlendedClassifier(nnx.Module):
    """Per-modality encoders, each with its own head, and a fused head on their concatenated features.

    Calling it with ``{modality: input}`` returns ``{modality: logits,
    FUSED: logits}`` and the encoders' features.
    """

    def __init__(self, encoders: Mapping[str, nnx.Module], heads: Mapping[str, Head], fused_head: Head):
        self.encoders = nnx.Dict(encoders)
        self.heads = nnx.Dict(heads)
        self.fused_head = fused_head

    def __call__(self, inputs: Mapping[str, jnp.ndarray], *, train: bool = False):
        names = sorted(inputs)
        features = {n: self.encoders[n](inputs[n], train=train) for n in names}
        logits = {n: self.heads[n](features[n])[0] for n in names}
        logits[FUSED] = self.fused_head(jnp.concatenate([features[n] for n in names], axis=-1))[0]
        return logits, features


class GBlendingMethod(SingleModelMethod):
    """``gblending``: one model, its heads' losses blended, one epoch per phase; weights in ``state["weights"]``."""

    per_modality = False

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        super().__init__(config, train_split, mesh)
        self.options = config.gblending
        if FUSED in self.modalities:
            raise ValueError(f"gblending names its fused head {FUSED!r}; rename that modality.")
        self.heads = tuple(sorted(self.modalities)) + (FUSED,)
        self.train_rows, self.holdout_rows = batches.holdout_split(
            len(self.labels), self.options.holdout_fraction, config.seed, "gblending.holdout_fraction"
        )
        self.measure_rows = self.train_rows
        if 0 < self.options.train_measure_size < len(self.train_rows):
            chosen = np.random.default_rng([config.seed, batches.HOLDOUT_STREAM, 1]).choice(
                self.train_rows, self.options.train_measure_size, replace=False
            )
            self.measure_rows = np.sort(chosen)
        self.steps_per_epoch = batches.steps_per_epoch(len(self.train_rows), config.train.batch_size)
        rngs = nnx.Rngs(config.seed)
        dim = config.model.dim
        model = BlendedClassifier(
            build_encoders(config, {m: self.inputs[m].shape[1:] for m in self.modalities}, rngs),
            {m: Head(dim, num_classes, rngs=rngs) for m in sorted(self.modalities)},
            Head(dim * len(self.modalities), num_classes, rngs=rngs),
        )
        self._finish(model, steps.make_optimizer(config.optimizer, steps_per_epoch=self.steps_per_epoch))
        graphdef = self.graphdef

        @jax.jit
        def predict(params, model_state, inputs):
            return steps.apply_model(graphdef, params, model_state, inputs, train=False)[0][0][FUSED]

        @jax.jit
        def head_sums(params, model_state, inputs, labels, real):
            """Per head, the summed cross-entropy and number correct over the batch's real rows."""
            logits = steps.apply_model(graphdef, params, model_state, inputs, train=False)[0][0]
            stacked = jnp.stack([logits[h] for h in self.heads])
            losses = jax.vmap(optax.softmax_cross_entropy_with_integer_labels, (0, None))(stacked, labels)
            correct = (jnp.argmax(stacked, axis=-1) == labels).astype(jnp.float32)
            return jnp.sum(losses * real, axis=1), jnp.sum(correct * real, axis=1)

        self.predict, self.head_sums = predict, head_sums

    def _make_step(self):
        graphdef, tx, mesh, heads = self.graphdef, self.tx, self.mesh, self.heads

        def step(weights, carry, batch):
            params, model_state, opt_state = carry
            xs, y = step_inputs(batch, mesh)

            def loss_fn(p):
                (logits, _), new_state = steps.apply_model(graphdef, p, model_state, xs, train=True)
                ce = optax.softmax_cross_entropy_with_integer_labels
                losses = jnp.stack([ce(logits[h], y).mean() for h in heads])
                return jnp.dot(weights, losses), new_state  # Eq. 7.

            params, opt_state, loss, model_state = steps.optimizer_step(loss_fn, tx, params, opt_state)
            return (params, model_state, opt_state), loss

        return step

    def _draws(self, epoch: int, stream: int) -> feed.StepDraws:
        """An epoch over the training part ``T`` (rows of the split), from ``phase_rng(seed, epoch, stream)``."""
        rng = batches.phase_rng(self.config.seed, epoch, stream)
        batch_size = self.config.train.batch_size
        order = self.train_rows[batches.epoch_batches(rng, len(self.train_rows), batch_size, 1)]
        lam, partners = batches.mixup_draws(rng, 0.0, order.shape[0], batch_size)
        crops = augment.phase_crops(self.config, self.inputs, epoch, order.shape, self.modalities)
        return feed.StepDraws(order, lam, partners, crops)

    def draws(self, phase: int) -> feed.StepDraws:
        return self._draws(phase, 0)

    @property
    def spans(self) -> Tuple[Tuple[int, int], ...]:
        """``(first epoch, epochs)`` of each stretch trained with one set of weights."""
        if self.options.mode == "offline":
            return ((0, self.num_phases),)
        return super_epochs(self.num_phases, self.options.first_super_epoch, self.options.super_epoch)

    def init(self) -> dict:
        state = super().init()
        first, epochs = self.spans[0]
        return {**state, "weights": self.estimate_weights(state["params"], state["model_state"], first, epochs)}

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False) -> loop.PhasePlan:
        plan = super().phase_plan(state, phase, best_variables, inside=inside)
        return plan._replace(constants=state["weights"])

    def state_inside(self, state, phase: int, carry) -> dict:
        return {**super().state_inside(state, phase, carry), "weights": state["weights"]}

    def finish_phase(self, state, phase: int, carry) -> dict:
        state = self.state_inside(state, phase, carry)
        starts = {first: epochs for first, epochs in self.spans}
        if phase + 1 in starts:  # A super-epoch begins: Algorithm 3 re-estimates from this checkpoint.
            weights = self.estimate_weights(state["params"], state["model_state"], phase + 1, starts[phase + 1])
            state = {**state, "weights": weights}
        return state

    def head_statistics(self, params, model_state, rows: np.ndarray) -> np.ndarray:
        """``[H]`` per head, the mean loss (``measure="loss"``) or error rate over ``rows`` of the split."""
        loss_sum, correct_sum = np.zeros(len(self.heads)), np.zeros(len(self.heads))
        for batch_rows, count in feed.batched_rows(len(rows), self.config.train.eval_batch_size):
            picked = rows[batch_rows]
            inputs = {m: feed.put_rows(np.asarray(self.inputs[m][picked]), self.mesh) for m in self.modalities}
            real = (np.arange(len(batch_rows)) < count).astype(np.float32)
            losses, correct = self.head_sums(params, model_state, inputs, self.labels[picked], real)
            loss_sum += np.asarray(losses, np.float64)
            correct_sum += np.asarray(correct, np.float64)
        if self.options.measure == "accuracy":
            return 1.0 - correct_sum / len(rows)
        return loss_sum / len(rows)

    def estimate_weights(self, params, model_state, first_epoch: int, epochs: int) -> jax.Array:
        """Algorithm 1: each head trained alone for ``epochs`` epochs from the checkpoint, then Eq. 6.

        Raises:
          FloatingPointError: the weights are not finite (a head's ``dO`` or
            the normaliser is 0, or an estimation run diverged).
        """
        train_before = self.head_statistics(params, model_state, self.measure_rows)
        holdout_before = self.head_statistics(params, model_state, self.holdout_rows)
        train_after, holdout_after = np.zeros(len(self.heads)), np.zeros(len(self.heads))
        for k in range(len(self.heads)):
            alone = jnp.asarray(np.eye(len(self.heads))[k], jnp.float32)  # Only head k's loss.
            carry = (params, model_state, self.tx.init(params))
            for epoch in range(first_epoch, first_epoch + epochs):
                plan = loop.PhasePlan(
                    self.run_chunk,
                    alone,
                    carry,
                    self._draws(epoch, _ESTIMATION_STREAM + k),
                    self.inputs,
                    self.labels,
                    self.steps_per_epoch,
                )
                for carry, _, _ in loop.run_chunks(
                    plan, start=0, chunk=plan.chunk_steps(self.config.train.chunk_steps), mesh=self.mesh
                ):
                    pass
            train_after[k] = self.head_statistics(carry[0], carry[1], self.measure_rows)[k]
            holdout_after[k] = self.head_statistics(carry[0], carry[1], self.holdout_rows)[k]
        gain, overfitting = generalization_and_overfitting(train_before, holdout_before, train_after, holdout_after)
        weights = blending_weights(gain, overfitting, gain_sign=self.options.gain)
        if not np.all(np.isfinite(weights)):
            raise FloatingPointError(
                f"G-Blend weights for epochs {first_epoch + 1}-{first_epoch + epochs} are not finite: "
                f"heads {list(self.heads)}, dG={gain.tolist()}, dO={overfitting.tolist()}."
            )
        return jnp.asarray(weights, jnp.float32)


registry.register(
    registry.MethodSpec(
        "gblending",
        GBlendingMethod,
        "per-modality and fused heads, their losses blended by overfitting-to-generalisation weights (G-Blend)",
        {"gblending": GBlendingOptions},
        (registry.ReportRow("G-Blend"),),
        "Wang, Tran and Feiszli, CVPR 2020",
    )
)
