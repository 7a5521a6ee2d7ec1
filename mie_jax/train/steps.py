"""Pieces shared by the methods: optimizer, a unimodal training step, the covariance pass, prediction."""

import functools
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mie_jax
from mie_jax.models.encoders import scale_pixels
from mie_jax.models.head import HEAD_LAYERS
from mie_jax.train import augment, feed, parallel
from mie_jax.train.config import TrainConfig


def make_optimizer(
    config: TrainConfig,
    *,
    sam: bool,
    steps_per_epoch: int,
    projection: Optional[optax.GradientTransformation] = None,
) -> optax.GradientTransformationExtraArgs:
    """SAM (optional) -> gradient projection -> weight decay -> SGD or Adam -> plateau scaling.

    Weight decay comes after the projection, so ``T`` acts on the loss
    gradient only, as in the released code. ``steps_per_epoch`` converts the
    learning-rate schedule's epochs (``config.lr_schedule``) into steps; the
    plateau schedule reads the loss from ``update(..., value=loss)``, which
    :func:`optimizer_step` passes. With ``skip_nonfinite_steps`` the whole
    chain is skipped for a step whose gradient is not finite. With
    ``sam_per_device`` SAM expects its group axis (:func:`make_train_step`'s
    ``sam_groups``).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    learning_rate = config.learning_rate
    if config.lr_schedule == "step":
        learning_rate = optax.exponential_decay(
            config.learning_rate, config.lr_step_epochs * steps_per_epoch, config.lr_decay, staircase=True
        )
    parts = []
    if sam:
        axis_name = SAM_GROUP_AXIS if config.sam_per_device else None
        mask = head_params_mask if config.sam_params == "head" else None
        parts.append(
            mie_jax.sam(config.rho, normalize=config.sam_normalize, mix=config.sam_mix, axis_name=axis_name, mask=mask)
        )
    parts.append(projection if projection is not None else mie_jax.flat_projection())
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    if config.optimizer == "sgd":
        parts.append(optax.sgd(learning_rate, momentum=config.momentum or None))
    else:
        parts.append(optax.adam(learning_rate))
    if config.lr_schedule == "plateau":
        parts.append(
            optax.contrib.reduce_on_plateau(
                factor=config.lr_decay, patience=config.lr_patience, accumulation_size=steps_per_epoch
            )
        )
    if config.skip_nonfinite_steps:
        return optax.apply_if_finite(optax.chain(*parts), config.skip_nonfinite_steps)
    return optax.chain(*parts)


def head_params_mask(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """True at every parameter of a classifier's ``head``, False elsewhere (SAM's ``mask``)."""
    return {name: jax.tree.map(lambda _: name == "head", tree) for name, tree in params.items()}


def mixup_cross_entropy(logits, labels, partner_labels, lam):
    """``lam * CE(y) + (1 - lam) * CE(y_partner)``; ``lam = 1`` is plain cross-entropy."""
    ce = optax.softmax_cross_entropy_with_integer_labels
    return jnp.mean(lam * ce(logits, labels) + (1.0 - lam) * ce(logits, partner_labels))


def split_model(model: nnx.Module):
    """``(graphdef, params, model_state)``, the last two plain nested dicts of arrays.

    ``model_state`` holds every variable that is not a parameter (BatchNorm
    statistics); it is empty for models without any.
    """
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(model_state)


def apply_model(graphdef, params, model_state, *args, train: bool, **kwargs):
    """Runs the module functionally: ``(outputs, updated model_state)``.

    With ``train=True`` BatchNorm normalises by the batch and updates its
    running statistics; with ``train=False`` it uses them.
    """
    model = nnx.merge(graphdef, params, model_state)
    outputs = model(*args, train=train, **kwargs)
    return outputs, nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))


def head_kernel_tree(params: Any, leaves: Mapping[str, Any]) -> Any:
    """A tree of ``params``' structure: ``leaves[layer]`` at each head kernel, None elsewhere.

    It is the shape of the extra arguments ``transforms=`` (T matrices) and
    ``features=`` (layer inputs) that the projections take.
    """
    tree = jax.tree.map(lambda _: None, params)
    for layer in HEAD_LAYERS:
        tree["head"][layer]["kernel"] = leaves[layer]
    return tree


def optimizer_step(
    loss_fn, tx, params, opt_state, *, modify_grads=None, extra_args_from_aux=None, axis_name=None, **extra_args
):
    """One update of ``params`` by ``tx`` from ``loss_fn(params) -> (loss, aux)``.

    ``tx`` receives ``grad_fn`` (for :func:`mie_jax.sam`), ``value`` (the
    loss, for ``optax.contrib.reduce_on_plateau``), ``extra_args``
    (e.g. ``transforms=`` for :func:`mie_jax.flat_projection`) and
    ``extra_args_from_aux(aux)`` (e.g. MLA's ``features=`` from this forward
    pass); ``modify_grads(grads, aux)`` may rewrite the gradient first (OGM-GE).

    Inside ``jax.vmap(..., axis_name=axis_name)`` over parts of a batch,
    ``loss`` is the mean over the parts (``tx`` must average the gradients over
    the axis, as ``mie_jax.sam(axis_name=...)`` does).

    Returns:
      ``(params, opt_state, loss, aux)`` with ``loss`` and ``aux`` at the old params.
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)
    if modify_grads is not None:
        grads = modify_grads(grads, aux)
    if extra_args_from_aux is not None:
        extra_args = {**extra_args, **extra_args_from_aux(aux)}

    def grad_fn(perturbed, i):
        del i  # One batch per step.
        return jax.grad(lambda p: loss_fn(p)[0])(perturbed)

    updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn, value=loss, **extra_args)
    return optax.apply_updates(params, updates), opt_state, loss, aux


SAM_GROUP_AXIS = "sam_group"


def make_train_step(
    graphdef,
    tx,
    modality: str,
    *,
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
    With ``online_covariance`` the step also adds its head-layer inputs to
    ``covariance`` (Eq. 5 without a separate pass). With a ``mesh``, the batch
    is split over its devices (:mod:`mie_jax.train.parallel`).

    ``sam_groups > 0`` splits every batch into that many equal parts, each
    perturbed along its own gradient (m-sharpness; with one part per device,
    the SAM authors' per-device perturbation): the step runs under
    ``jax.vmap`` over the parts with axis ``SAM_GROUP_AXIS``, ``tx`` must be
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
                (logits, layer_inputs), new_state = apply_model(graphdef, p, model_state, x, train=True)
                return mixup_cross_entropy(logits, y, partner_y, lam), (layer_inputs, new_state)

            new_params, new_opt_state, loss, (layer_inputs, new_model_state) = optimizer_step(
                loss_fn, tx, params, opt_state, axis_name=axis_name, transforms=transforms
            )
            if axis_name is not None:
                new_model_state = jax.lax.pmean(new_model_state, axis_name)
            return new_params, new_opt_state, loss, new_model_state, layer_inputs

        if sam_groups:
            parts = jax.tree.map(lambda a: a.reshape(sam_groups, -1, *a.shape[1:]), (x, y, partner_y))
            params, opt_state, loss, model_state, layer_inputs = jax.vmap(
                functools.partial(update, axis_name=SAM_GROUP_AXIS),
                axis_name=SAM_GROUP_AXIS,
                out_axes=(None, None, None, None, 0),
            )(*parts)
            layer_inputs = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), layer_inputs)
        else:
            params, opt_state, loss, model_state, layer_inputs = update(x, y, partner_y)
        if online_covariance:
            covariance = {
                layer: mie_jax.update_covariance(covariance[layer], layer_inputs[layer], statistic=statistic)
                for layer in HEAD_LAYERS
            }
        return (params, model_state, opt_state, covariance), loss

    return step


def zero_covariances(params) -> dict:
    """Zero ``[d, d]`` sums for each head layer's input dimension."""
    return {layer: jnp.zeros((params["head"][layer]["kernel"].shape[0],) * 2, jnp.float32) for layer in HEAD_LAYERS}


def make_covariance_pass(graphdef, *, statistic: str = "batch_mean") -> Callable:
    """Eq. 5 over a whole split: ``fn(params, model_state, column, batch_size, group) -> {layer: Ybar}``.

    Batches of ``batch_size`` rows are taken in order (every example once; the
    last batch may be smaller), in evaluation mode, with the parameters held
    fixed and no gradient. ``group`` batches at a time are read from the host
    ``column`` and scanned in one call (the last group padded with masked
    batches), so device memory holds ``group * batch_size`` rows, whatever the
    split's size.
    """

    def accumulate(params, model_state, covariance, x):
        (_, layer_inputs), _ = apply_model(graphdef, params, model_state, x, train=False)
        return {
            layer: mie_jax.update_covariance(covariance[layer], layer_inputs[layer], statistic=statistic)
            for layer in HEAD_LAYERS
        }

    @jax.jit
    def group_of_batches(params, model_state, covariance, batches, valid):
        def body(c, batch_and_valid):
            x, is_real = batch_and_valid
            updated = accumulate(params, model_state, c, x)
            return jax.tree.map(lambda new, old: jnp.where(is_real, new, old), updated, c), None

        return jax.lax.scan(body, covariance, (batches, valid))[0]

    accumulate_one = jax.jit(accumulate)

    def covariance_pass(params, model_state, column, batch_size, group):
        covariance = zero_covariances(params)
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

    covariance_pass.group_of_batches = group_of_batches  # For memory plans (benchmarks.memory).
    return covariance_pass


def make_predict(graphdef, **call_kwargs) -> Callable:
    """``fn(params, model_state, inputs) -> logits`` (evaluation mode) for a module returning ``(logits, aux)``.

    ``call_kwargs`` are static arguments of the module's call (e.g. ``modality=``).
    """

    @jax.jit
    def predict(params, model_state, inputs):
        return apply_model(graphdef, params, model_state, inputs, train=False, **call_kwargs)[0][0]

    return predict
