"""Twitter2015 (image + text, 3 sentiments): the paper's first image-text setting.

TomBERT's tsv files and images (see ``mie_jax.data.builders.twitter2015``);
the published dev split selects the model. ``--set bert_dir=DIR`` names a local
BERT-base checkpoint as in the paper; without it all-MiniLM-L6-v2 is used.

  python -m experiments.run --dataset twitter2015 --data-dir /data/twitter2015 --set bert_dir=/models/bert-base-uncased
"""

from experiments.configs import paper


def get_config() -> dict:
    return {
        **paper.IMAGE_TEXT,
        "modalities": ("image", "text"),
        # The released code's stages (image first).
        "phase_schedule": (10, 30),
        "outer_iterations": 2,
        # The released code selects Twitter2015 on accuracy, the other datasets on macro-F1.
        "selection_metric": "accuracy",
        "reference": {**paper.REFERENCE, "mixup_alpha": 0.9},
    }
