"""The paper's settings (section 4.2.3) that its datasets' configs share."""

import importlib

# MIE itself: tau of Eq. 7 and the covariance pass's batch.
METHOD = {"tau": 0.4, "covariance_batch_size": 12}
# Audio-video and NVGesture: SGD, divided by 10 on plateau.
SGD = {"optimizer": "sgd", "learning_rate": 1e-2, "momentum": 0.9, "weight_decay": 1e-4, "lr_schedule": "plateau"}
# Image-text: Adam at 1e-5 (BERT fine-tuning).
ADAM = {"optimizer": "adam", "learning_rate": 1e-5, "weight_decay": 0.0}
# The released code's schedule: StepLR every 40 epochs, x0.1 (docs/FIDELITY.md, row 12).
REFERENCE = {"lr_schedule": "step"}

AUDIO_VISUAL = {
    **METHOD,
    **SGD,
    "modalities": ("audio", "visual"),
    "encoder": "audio=resnet18,visual=frames_resnet18",
    "dim": 512,
    "batch_size": 64,
    # The audio radius (a no-op in float32 for most weights: see docs/FIDELITY.md).
    "rho": 1e-10,
    "selection_metric": "accuracy",
    # The frames' training-time RandomResizedCrop and flip of the loaders the released code shares
    # with OGM-GE (docs/FIDELITY.md, rows 14 and 15).
    "augment": ("visual",),
    # Those loaders' Normalize with ImageNet's statistics.
    "imagenet_normalize": ("visual",),
}
IMAGE_TEXT = {
    **METHOD,
    **ADAM,
    "encoder": "image=resnet50,text=bert",
    "dim": 1024,
    "batch_size": 32,
    "rho": 1e-15,
    # The peers' (TomBERT's, Cai et al.'s) image loaders Normalize with ImageNet's statistics, which
    # their ImageNet-pretrained ResNet expects.
    "imagenet_normalize": ("image",),
}

# A dataset config's PRETRAINED_WEIGHTS describes, per modality, the weights its peers start from;
# for the TEXT modality that is a BERT checkpoint in bert_dir, for the others encoder_weights.
TEXT = "text"


def missing_pretrained_warning(dataset: str, config) -> str:
    """One line saying which pretrained weights the paper's ``dataset`` setting assumes and this run lacks.

    Args:
        dataset: The ``--dataset`` name.
        config: The run's ``TrainConfig``.

    Returns:
        The warning, or "" when the dataset assumes none or the run has them all
        (``encoder_weights`` for the backbones, ``bert_dir`` for the text).
    """
    assumed = getattr(importlib.import_module(f"experiments.configs.{dataset}"), "PRETRAINED_WEIGHTS", {})
    named = {entry.partition("=")[0] for entry in config.encoder_weights}
    missing = [m for m in assumed if m in config.modalities and not (config.bert_dir if m == TEXT else m in named)]
    if not missing:
        return ""
    wanted = "; ".join(f"{m}: {assumed[m]}" for m in missing)
    return (
        f"warning: the paper's {dataset} setting starts from pretrained encoders, which this run lacks "
        f"({wanted}); see experiments/configs/{dataset}.py."
    )
