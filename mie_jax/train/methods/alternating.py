"""MIE's Algorithm 1 and its ablations: one classifier per modality, trained in turn.

Phase ``i`` trains modality ``j = i mod m`` (outer iteration ``i // m``) for
``phase_epochs`` epochs. With gradient modification, its head kernels'
gradients are multiplied by ``T`` built from the covariance of the modality
trained just before it (``j - 1`` cyclically; ``T = I`` in the very first
phase). After the phase, modality ``j``'s covariance is recomputed: by one
pass over its training data (``covariance="pass"``, the paper) or from the
phase's own steps (``"online"``).
"""

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mie_jax
from mie_jax.models.encoders import build_unimodal_classifier, encoder_names, scale_pixels
from mie_jax.models import taps
from mie_jax.models.head import HEAD_LAYERS
from mie_jax.train import augment, batches, feed, loop, options, parallel, registry, steps


# MIE's layers in the paper: the head's three dense layers.
HEAD_LAYER_NAMES = tuple(f"head/{layer}" for layer in HEAD_LAYERS)


@dataclasses.dataclass(frozen=True)
class SamOptions:
    """The ``sam`` section: the forward phase's sharpness-aware step (Eq. 2-4).

    Attributes:
      rho: SAM's radius (Eq. 3).
      normalize: ``global`` (paper) or ``per_tensor`` (released code).
      mix: ``None`` (paper) or the weight of the perturbed gradient (0.3 in
        the released code).
      params: ``all`` (paper) or ``head`` (the released code: only the
        classification head is perturbed, its input features are not).
      per_device: perturb each device's part of the batch along its own
        gradient (m-sharpness, as in the SAM authors' JAX code) instead of
        along the global gradient (the default).
    """

    rho: float = options.number(0.05, ("[", 0.0), note="SAM's radius")
    normalize: str = options.choice("global", ("global", "per_tensor"))
    mix: Optional[float] = options.number(None, ("[", 0.0), ("]", 1.0), "the paper's SAM", optional=True)
    params: str = options.choice("all", ("all", "head"))
    per_device: bool = options.flag(False)

    def __post_init__(self):
        options.validate("sam.", self)


@dataclasses.dataclass(frozen=True)
class GradientModificationOptions:
    """The ``mie`` section: the backward phase's covariance and ``T`` (Eq. 5, 7, 8).

    Attributes:
      covariance_batch_size: batch size of the covariance pass (the paper: 12).
      covariance: ``pass`` (one extra pass over the modality's data after its
        phase, the paper) or ``online`` (accumulated during the phase's own
        training steps, no extra pass).
      covariance_statistic: see :func:`mie_jax.update_covariance`.
      tau: the damping strength of T (Eq. 7).
      rank: 0 for the dense T (the paper); ``r >= 1`` applies T as the
        identity plus a rank-``r`` correction (:class:`mie_jax.LowRankTransform`),
        exact up to its reported bound, at ``4 d r`` instead of ``2 d^2`` FLOPs
        per output column.
      tol: with ``rank``, modes whose damping ``1 - sigma`` is at most this are
        dropped (the bound is the largest one dropped).
      solver: with ``rank``, ``eigh`` (exact) or ``subspace`` (block power
        iteration, cheaper from d ~ 1024 on).
      layers: the layers whose gradients ``T`` multiplies: ``head`` (the
        paper: the head's three dense layers), ``all`` (every dense and conv
        layer of the encoders and the head that every modality has, with the
        same input width: the paper's "deep layers of networks with the same
        architecture", end of section 3.2; an extension beyond its
        experiments), or comma-separated layer names (``encoder/out,head/fc1``;
        :func:`matching_layers` lists them).
    """

    covariance_batch_size: int = options.whole(12, 1)
    covariance: str = options.choice("pass", ("pass", "online"))
    covariance_statistic: str = options.choice("batch_mean", ("batch_mean", "second_moment"))
    tau: float = options.number(0.4, ("(", 0.0), note="T's damping strength, Eq. 7; the paper: 0.4")
    rank: int = options.whole(0, 0, "0: the dense T")
    tol: float = options.number(1e-3, ("[", 0.0), (")", 1.0), "damping below which a mode of T is dropped")
    solver: str = options.choice("eigh", ("eigh", "subspace"))
    layers: str = options.text("head")

    def __post_init__(self):
        options.validate("mie.", self)


@dataclasses.dataclass(frozen=True)
class AlternatingOptions:
    """The ``alternating`` section: how each phase of the alternation starts (the released code's stages).

    Attributes:
      fresh_optimizer_per_phase: rebuild the optimizer state at every phase.
      reload_best_per_phase: start every phase from the best parameters so far.
      mixup_alpha: Beta(alpha, alpha) mixup on the trained modality; 0 disables it.
    """

    fresh_optimizer_per_phase: bool = options.flag(False)
    reload_best_per_phase: bool = options.flag(False)
    mixup_alpha: float = options.number(0.0, ("[", 0.0), note="0: no mixup")

    def __post_init__(self):
        options.validate("alternating.", self)


def make_train_step(
    graphdef,
    tx,
    modality: str,
    *,
    layers: Sequence[str] = HEAD_LAYER_NAMES,
    online_covariance: bool = False,
    statistic: str = "batch_mean",
    mesh=None,
    sam_groups: int = 0,
) -> Callable:
    """One training step of a unimodal classifier: ``step(transforms, carry, batch) -> (carry, loss)``.

    ``carry`` is ``(params, model_state, opt_state, covariance)``;
    ``batch`` a :class:`~mie_jax.train.feed.Batch` whose ``inputs[modality]``
    are the rows, augmented by ``batch.crops`` (:mod:`mie_jax.train.augment`)
    and mixed up with ``lam`` and ``partners``; ``transforms`` is the tree of
    ``T`` matrices (or ``None``) that :func:`mie_jax.flat_projection` applies.
    With ``online_covariance`` the step also adds the inputs of ``layers``
    (names of :mod:`mie_jax.models.taps` layers) to ``covariance`` (Eq. 5
    without a separate pass). With a ``mesh``, the batch is split over its
    devices (:mod:`mie_jax.train.parallel`).

    ``sam_groups > 0`` splits every batch into that many equal parts, each
    perturbed along its own gradient (m-sharpness; with one part per device,
    the SAM authors' per-device perturbation): the step runs under
    ``jax.vmap`` over the parts with axis ``steps.SAM_GROUP_AXIS``, ``tx`` must be
    built with ``sam_per_device`` so that SAM averages the parts' gradients,
    and BatchNorm statistics are averaged over the parts.
    """

    def step(transforms, carry, batch):
        params, model_state, opt_state, covariance = carry
        x = scale_pixels(augment.apply(batch.inputs[modality], batch.crops.get(modality)))
        y, lam, partner = batch.labels, batch.lam, batch.partners
        if jnp.issubdtype(x.dtype, jnp.floating):
            x = lam * x + (1.0 - lam) * x[partner]
        else:  # Token ids cannot be mixed: mixup applies to continuous inputs only.
            lam = jnp.ones_like(lam)
        x, y, partner_y = parallel.shard_batch((x, y, y[partner]), mesh)

        def update(x, y, partner_y, axis_name=None):
            def loss_fn(p):
                (logits, _), new_state, layer_inputs = steps.apply_model(
                    graphdef, p, model_state, x, train=True, record=True
                )
                # Only the online covariance reads them; otherwise XLA drops them.
                inputs = {layer: layer_inputs[layer] for layer in layers} if online_covariance else {}
                return steps.mixup_cross_entropy(logits, y, partner_y, lam), (inputs, new_state)

            new_params, new_opt_state, loss, (layer_inputs, new_model_state) = steps.optimizer_step(
                loss_fn, tx, params, opt_state, axis_name=axis_name, transforms=transforms
            )
            if axis_name is not None:
                new_model_state = jax.lax.pmean(new_model_state, axis_name)
            return new_params, new_opt_state, loss, new_model_state, layer_inputs

        if sam_groups:
            parts = jax.tree.map(lambda a: a.reshape(sam_groups, -1, *a.shape[1:]), (x, y, partner_y))
            params, opt_state, loss, model_state, layer_inputs = jax.vmap(
                functools.partial(update, axis_name=steps.SAM_GROUP_AXIS),
                axis_name=steps.SAM_GROUP_AXIS,
                out_axes=(None, None, None, None, 0),
            )(*parts)
            layer_inputs = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), layer_inputs)
        else:
            params, opt_state, loss, model_state, layer_inputs = update(x, y, partner_y)
        if online_covariance:
            covariance = add_covariances(covariance, layer_inputs, statistic)
        return (params, model_state, opt_state, covariance), loss

    return step


def add_covariances(covariance: Mapping[str, Any], layer_inputs: Mapping[str, Any], statistic: str) -> dict:
    """Eq. 5's term of one batch for each layer of ``covariance``, from its inputs ``[B, ..., d]``.

    A dense layer's inputs ``[B, d]`` add ``zbar zbar^T``; a conv layer's (or a
    dense layer applied per position) pool their positions with the batch
    (:func:`mie_jax.update_conv_covariance`).
    """
    return {
        layer: mie_jax.update_conv_covariance(cov, layer_inputs[layer], statistic=statistic)
        for layer, cov in covariance.items()
    }


def zero_covariances(params, layers: Sequence[str] = HEAD_LAYER_NAMES) -> dict:
    """Zero ``[d, d]`` sums for each layer of ``layers``, ``d`` its kernel's input dimension."""
    return {
        layer: jnp.zeros((steps.layer_params(params, layer)["kernel"].shape[-2],) * 2, jnp.float32) for layer in layers
    }


def make_covariance_pass(graphdef, *, layers: Sequence[str] = HEAD_LAYER_NAMES, statistic: str = "batch_mean"):
    """Eq. 5 over a whole split: ``fn(params, model_state, column, batch_size, group) -> {layer: Ybar}``.

    Batches of ``batch_size`` rows are taken in order (every example once; the
    last batch may be smaller), in evaluation mode, with the parameters held
    fixed and no gradient; each of ``layers`` gets the sum of its inputs'
    terms. ``group`` batches at a time are read from the host ``column`` and
    scanned in one call (the last group padded with masked batches), so device
    memory holds ``group * batch_size`` rows, whatever the split's size.
    """

    def accumulate(params, model_state, covariance, x):
        _, _, layer_inputs = steps.apply_model(graphdef, params, model_state, x, train=False, record=True)
        return add_covariances(covariance, layer_inputs, statistic)

    @jax.jit
    def group_of_batches(params, model_state, covariance, batches, valid):
        def body(c, batch_and_valid):
            x, is_real = batch_and_valid
            updated = accumulate(params, model_state, c, x)
            return jax.tree.map(lambda new, old: jnp.where(is_real, new, old), updated, c), None

        return jax.lax.scan(body, covariance, (batches, valid))[0]

    accumulate_one = jax.jit(accumulate)

    def covariance_pass(params, model_state, column, batch_size, group):
        covariance = zero_covariances(params, layers)
        length = len(column)
        whole = length // batch_size

        def load(first):
            batch_ids = np.arange(first, first + group)
            valid = batch_ids < whole
            rows = np.minimum(batch_ids, whole - 1)[:, None] * batch_size + np.arange(batch_size)
            x = np.asarray(column[rows.reshape(-1)]).reshape(group, batch_size, *column.shape[1:])
            return jax.device_put(x), jax.device_put(valid)

        if whole:
            loads = (lambda first=first: load(first) for first in range(0, whole, group))
            for batches, valid in feed.prefetched(loads):
                covariance = group_of_batches(params, model_state, covariance, batches, valid)
        if whole * batch_size < length:
            rest = np.asarray(column[np.arange(whole * batch_size, length)])
            covariance = accumulate_one(params, model_state, covariance, rest)
        return covariance

    covariance_pass.group_of_batches = group_of_batches  # Public: compiled alone for memory plans.
    return covariance_pass


def matching_layers(params: Mapping[str, Any], tapped: Mapping[str, Sequence[str]]) -> tuple:
    """The layers every modality's classifier has, with kernels of the same rank and input width.

    Args:
      params: modality -> its classifier's parameters.
      tapped: modality -> the names of its tapped layers, in model order
        (:func:`mie_jax.models.taps.tapped_layers`).

    Returns:
      The names, in the first modality's order: the layers whose ``T`` one
      modality's covariance can give another's gradient.
    """
    first, *others = params

    def signature(m, layer):
        kernel = steps.layer_params(params[m], layer)["kernel"]
        return kernel.ndim, kernel.shape[-2]

    return tuple(
        layer
        for layer in tapped[first]
        if all(layer in tapped[m] and signature(m, layer) == signature(first, layer) for m in others)
    )


def select_layers(spec: str, params: Mapping[str, Any], tapped: Mapping[str, Sequence[str]]) -> tuple:
    """The layers ``mie.layers`` names (``head``, ``all`` or a comma-separated list), checked.

    Raises:
      ValueError: a named layer that not every modality has with the same input width.
    """
    if spec == "head":
        return HEAD_LAYER_NAMES
    matching = matching_layers(params, tapped)
    if spec == "all":
        return matching
    named = tuple(layer.strip() for layer in spec.split(",") if layer.strip())
    unknown = [layer for layer in named if layer not in matching]
    if unknown or not named:
        raise ValueError(
            f"mie.layers names {unknown or spec!r}, not layers that every modality has with the same input "
            f"width; expected head, all, or some of {', '.join(matching)}."
        )
    return named


class AlternatingMethod:
    """``mie``, ``mie_no_sam``, ``mie_no_gm`` and ``unimodal``: which of ``sam`` and ``mie`` the method reads."""

    per_modality = True

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        self.config = config
        self.modalities = tuple(config.modalities)
        self.inputs = {m: train_split.inputs[m] for m in self.modalities}  # Host columns, read batch by batch.
        self.labels = np.asarray(train_split.labels, np.int32)
        augment.check_augmentable(config, self.inputs)
        self.mesh = mesh
        self.num_classes = num_classes
        self.steps_per_epoch = batches.steps_per_epoch(len(self.labels), config.train.batch_size)
        # Which parts of MIE this method has: the sections its registry entry reads.
        self.sam = config.sam if config.reads("sam") else None
        self.gm = config.mie if config.reads("mie") else None
        self.tx = steps.make_optimizer(config.optimizer, sam=self.sam, steps_per_epoch=self.steps_per_epoch)
        self.graphdefs, self._initial = {}, {"params": {}, "model_state": {}}
        rngs = nnx.Rngs(config.seed)
        names, tapped = encoder_names(config, self.modalities), {}
        for m in self.modalities:
            model = build_unimodal_classifier(config, names[m], self.inputs[m].shape[1:], num_classes, rngs, m)
            tapped[m] = tuple(taps.tapped_layers(model))
            self.graphdefs[m], self._initial["params"][m], self._initial["model_state"][m] = steps.split_model(model)
        self.layers = (
            select_layers(self.gm.layers, self._initial["params"], tapped) if self.gm is not None else HEAD_LAYER_NAMES
        )
        self.online = self.gm is not None and self.gm.covariance == "online"
        # Per-device SAM: one group per device of the mesh (one group without a mesh: global SAM).
        sam_groups = (mesh.size if mesh is not None else 1) if self.sam is not None and self.sam.per_device else 0
        statistic = self.gm.covariance_statistic if self.gm is not None else "batch_mean"
        self.train_steps = {
            m: make_train_step(
                g,
                self.tx,
                m,
                layers=self.layers,
                online_covariance=self.online,
                statistic=statistic,
                mesh=mesh,
                sam_groups=sam_groups,
            )
            for m, g in self.graphdefs.items()
        }
        self.chunk_runners = {m: loop.chunk_runner(step) for m, step in self.train_steps.items()}
        self.covariance_passes = {
            m: make_covariance_pass(g, layers=self.layers, statistic=statistic) for m, g in self.graphdefs.items()
        }
        self.predicts = {m: steps.make_predict(g) for m, g in self.graphdefs.items()}
        if (
            self.gm is not None
        ):  # One compiled program for every layer's eigendecomposition (2.7x faster than op by op).
            gm, rank = self.gm, self.gm.rank or None
            self.flat_transforms = jax.jit(
                lambda covariances: mie_jax.flat_transforms(
                    covariances, gm.tau, rank, gm.tol if rank else None, solver=gm.solver
                )
            )

    @property
    def num_phases(self) -> int:
        return self.config.train.outer_iterations * len(self.modalities)

    def phase_name(self, phase: int) -> str:
        return self.modalities[phase % len(self.modalities)]

    def init(self) -> dict:
        params = self._initial["params"]
        return {
            **self._initial,
            "opt_state": {m: self.tx.init(p) for m, p in params.items()},
            "covariance": {m: zero_covariances(p, self.layers) for m, p in params.items()},
        }

    def variables(self, state) -> Mapping[str, Any]:
        """What prediction needs: parameters and model state of every modality."""
        return {"params": state["params"], "model_state": state["model_state"]}

    def _transforms(self, state, phase: int, modality: str):
        if self.gm is None:
            return None
        params = state["params"][modality]
        if phase == 0:  # Nothing trained before: T = I (Algorithm 1's start), in the form later phases use.
            rank = self.gm.rank
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
        return steps.kernel_tree(params, matrices)

    def draws(self, phase: int) -> feed.StepDraws:
        """The phase's batch order, mixup draws and crops: a pure function of (seed, phase)."""
        config, m = self.config, self.phase_name(phase)
        rng = batches.phase_rng(config.seed, phase)
        batch_size = config.train.batch_size
        order = batches.epoch_batches(rng, len(self.labels), batch_size, config.train.epochs_of_phase(phase))
        lam, partners = batches.mixup_draws(rng, config.alternating.mixup_alpha, order.shape[0], batch_size)
        return feed.StepDraws(order, lam, partners, augment.phase_crops(config, self.inputs, phase, order.shape, (m,)))

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False) -> loop.PhasePlan:
        """Phase ``phase``'s plan; ``inside``: continue from the carry that :meth:`state_inside` stored."""
        config = self.config
        m = self.phase_name(phase)
        params, model_state, opt_state = state["params"][m], state["model_state"][m], state["opt_state"][m]
        online = state["covariance"][m] if inside and self.online else zero_covariances(params, self.layers)
        if not inside:  # The released code's stage restart (skipped when resuming inside the stage).
            if config.alternating.reload_best_per_phase and best_variables is not None:
                params, model_state = best_variables["params"][m], best_variables["model_state"][m]
            if config.alternating.fresh_optimizer_per_phase:
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
        if self.gm is not None and self.gm.covariance == "pass":
            group = max(1, config.train.eval_batch_size // self.gm.covariance_batch_size)
            covariance = self.covariance_passes[m](
                params, model_state, self.inputs[m], self.gm.covariance_batch_size, group
            )
            state = {**state, "covariance": {**state["covariance"], m: covariance}}
        return state

    def logits(self, variables, inputs) -> dict:
        """Every modality's logits over a split's columns, ``eval_batch_size`` rows at a time (host arrays)."""
        return {
            m: feed.map_batches(
                lambda batch, m=m: self.predicts[m](variables["params"][m], variables["model_state"][m], batch[m]),
                {m: inputs[m]},
                self.config.train.eval_batch_size,
                self.mesh,
            )
            for m in self.modalities
        }


_MIE_PAPER = "Jiang, Chi and Yang, arXiv 2407.04587 (Algorithm 1)"
registry.register(
    registry.MethodSpec(
        "mie",
        AlternatingMethod,
        "Algorithm 1: modalities in turn, SAM steps, head gradients multiplied by `T` of the modality "
        "trained just before",
        {"sam": SamOptions, "mie": GradientModificationOptions, "alternating": AlternatingOptions},
        (
            registry.ReportRow("MIE"),
            registry.ReportRow("MIE (weighted fusion)", fusion="weighted"),
            # Issue 16's evidence row: T on every layer that the modalities share, not the head alone.
            registry.ReportRow("MIE (GM on all shared layers)", {"mie": {"layers": "all"}}),
        ),
        _MIE_PAPER,
    )
)
registry.register(
    registry.MethodSpec(
        "mie_no_sam",
        AlternatingMethod,
        "MIE without the forward phase (plain steps, gradient modification kept)",
        {"mie": GradientModificationOptions, "alternating": AlternatingOptions},
        (registry.ReportRow("MIE w/o SAM"),),
        _MIE_PAPER + ", ablation",
    )
)
registry.register(
    registry.MethodSpec(
        "mie_no_gm",
        AlternatingMethod,
        "MIE without the backward phase (SAM steps, `T = I`)",
        {"sam": SamOptions, "alternating": AlternatingOptions},
        (registry.ReportRow("MIE w/o GM"),),
        _MIE_PAPER + ", ablation",
    )
)
registry.register(
    registry.MethodSpec(
        "unimodal",
        AlternatingMethod,
        "each modality's classifier trained alone, in the same alternation, without SAM or `T`",
        {"alternating": AlternatingOptions},
        (registry.ReportRow("unimodal"),),
    )
)
