"""Twitter2015 (image + text, 3 sentiments): the paper's first image-text setting.

TomBERT's tsv files and images (see ``mie_jax.data.builders.twitter2015``);
the published dev split selects the model.

Pretrained weights: the paper follows TomBERT, whose image encoder is an
ImageNet-pretrained ResNet50 (torchvision's) and whose text encoder is
BERT-base. Give them as local files: ``--set model.encoder_weights=image=FILE``
(torchvision's names, e.g. timm's ``resnet50.tv_in1k`` ``model.safetensors``,
or torchvision's ``resnet50-*.pth`` converted with ``python -m mie_jax.models.convert``)
and ``--set model.bert_dir=DIR`` (a Hugging Face BERT-base directory; without it
all-MiniLM-L6-v2 is used). A run without them warns at its start.

  python -m experiments.run --dataset twitter2015 --data-dir /data/twitter2015
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
            "modalities": ("image", "text"),
            # The released code's stages (image first); it selects Twitter2015 on accuracy, the other
            # datasets on macro-F1.
            "train": {"phase_schedule": (10, 30), "outer_iterations": 2, "selection_metric": "accuracy"},
            "reference": merge(paper.REFERENCE, {"alternating": {"mixup_alpha": 0.9}}),
        },
    )
