"""Sarcasm (Cai et al. 2019; image + text, 2 classes): the paper's second image-text setting.

The published text files and images (see ``mie_jax.data.builders.sarcasm``);
the published validation split selects the model.

  python -m experiments.run --dataset sarcasm --data-dir /data/sarcasm --set bert_dir=/models/bert-base-uncased
"""

from experiments.configs import paper


def get_config() -> dict:
    return {
        **paper.IMAGE_TEXT,
        # The released code trains text first, in these stages.
        "modalities": ("text", "image"),
        "phase_schedule": (2, 30),
        "outer_iterations": 2,
        "selection_metric": "macro_f1",
        "reference": paper.REFERENCE,
    }
