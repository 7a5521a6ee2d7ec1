"""Sarcasm (Cai et al. 2019; image + text, 2 classes): the paper's second image-text setting.

The published text files and images (see ``mie_jax.data.builders.sarcasm``);
the published validation split selects the model.

Pretrained weights: the paper follows Cai et al., whose image encoder is an
ImageNet-pretrained ResNet (ResNet50 here, torchvision's weights), with
BERT-base for the text. Give them as local files: ``--set model.encoder_weights=image=FILE``
(torchvision's names, e.g. timm's ``resnet50.tv_in1k`` ``model.safetensors``,
or torchvision's ``resnet50-*.pth`` converted with ``python -m mie_jax.models.convert``)
and ``--set model.bert_dir=DIR`` (a Hugging Face BERT-base directory). A run without
them warns at its start.

  python -m experiments.run --dataset sarcasm --data-dir /data/sarcasm
      --set model.bert_dir=/models/bert-base-uncased
      --set model.encoder_weights=image=/models/resnet50.tv_in1k/model.safetensors
"""

from experiments.configs import merge, paper

# The pretrained weights the paper's setting assumes, by modality (paper.missing_pretrained_warning).
PRETRAINED_WEIGHTS = {
    "image": "ImageNet ResNet50, --set model.encoder_weights=image=resnet50.safetensors",
    paper.TEXT: "BERT-base, --set model.bert_dir=DIR",
}


def get_config() -> dict:
    return merge(
        paper.IMAGE_TEXT,
        {
            # The released code trains text first, in these stages.
            "modalities": ("text", "image"),
            "train": {"phase_schedule": (2, 30), "outer_iterations": 2, "selection_metric": "macro_f1"},
            "reference": paper.REFERENCE,
        },
    )
