"""The paper's settings (section 4.2.3) that its datasets' configs share."""

import importlib

from experiments.configs import merge

# MIE itself: tau of Eq. 7 and the covariance pass's batch.
METHOD = {"mie": {"tau": 0.4, "covariance_batch_size": 12}}
# Audio-video and NVGesture: SGD, divided by 10 on plateau.
SGD = {
    "optimizer": {
        "name": "sgd",
        "learning_rate": 1e-2,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_schedule": "plateau",
    }
}
# Image-text: Adam at 1e-5 (BERT fine-tuning).
ADAM = {"optimizer": {"name": "adam", "learning_rate": 1e-5, "weight_decay": 0.0}}
# The released code's schedule: StepLR every 40 epochs, x0.1 (docs/FIDELITY.md, row 12).
REFERENCE = {"optimizer": {"lr_schedule": "step"}}

AUDIO_VISUAL = merge(
    METHOD,
    SGD,
    {
        "modalities": ("audio", "visual"),
        "model": {"encoder": {"audio": "resnet18", "visual": "frames_resnet18"}, "dim": 512},
        "train": {"batch_size": 64, "selection_metric": "accuracy"},
        # The audio radius (a no-op in float32 for most weights: see docs/FIDELITY.md).
        "sam": {"rho": 1e-10},
        # The frames' training-time RandomResizedCrop and flip of the loaders the released code shares
        # with OGM-GE (docs/FIDELITY.md, rows 14 and 15), and those loaders' Normalize with ImageNet's
        # statistics.
        "data": {"augment": ("visual",), "imagenet_normalize": ("visual",)},
    },
)
IMAGE_TEXT = merge(
    METHOD,
    ADAM,
    {
        "model": {"encoder": {"image": "resnet50", "text": "bert"}, "dim": 1024},
        "train": {"batch_size": 32},
        "sam": {"rho": 1e-15},
        # The peers' (TomBERT's, Cai et al.'s) image loaders Normalize with ImageNet's statistics, which
        # their ImageNet-pretrained ResNet expects.
        "data": {"imagenet_normalize": ("image",)},
    },
)

# A dataset config's PRETRAINED_WEIGHTS describes, per modality, the weights its peers start from;
# for the TEXT modality that is a BERT checkpoint in model.bert_dir, for the others model.encoder_weights.
TEXT = "text"


def missing_pretrained_warning(dataset: str, config) -> str:
    """One line saying which pretrained weights the paper's ``dataset`` setting assumes and this run lacks.

    Args:
        dataset: The ``--dataset`` name.
        config: The run's ``TrainConfig``.

    Returns:
        The warning, or "" when the dataset assumes none or the run has them all
        (``model.encoder_weights`` for the backbones, ``model.bert_dir`` for the text).
    """
    assumed = getattr(importlib.import_module(f"experiments.configs.{dataset}"), "PRETRAINED_WEIGHTS", {})
    model = config.model
    missing = [
        m
        for m in assumed
        if m in config.modalities and not (model.bert_dir if m == TEXT else m in model.encoder_weights)
    ]
    if not missing:
        return ""
    wanted = "; ".join(f"{m}: {assumed[m]}" for m in missing)
    return (
        f"warning: the paper's {dataset} setting starts from pretrained encoders, which this run lacks "
        f"({wanted}); see experiments/configs/{dataset}.py."
    )
