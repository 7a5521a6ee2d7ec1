"""Sarcasm (Cai et al. 2019; image + text, 2 classes): the paper's second image-text setting.

The published text files and images (see ``mie_jax.data.builders.sarcasm``);
the published validation split selects the model.

  python -m experiments.run --dataset sarcasm --data-dir /data/sarcasm --set bert_dir=/models/bert-base-uncased
"""


def get_config() -> dict:
    return {
        # The released code trains text first.
        "modalities": ("text", "image"),
        "encoder": "image=resnet50,text=bert",
        "dim": 1024,
        "phase_schedule": (2, 30),
        "outer_iterations": 2,
        "batch_size": 32,
        "covariance_batch_size": 12,
        "tau": 0.4,
        "rho": 1e-15,
        "optimizer": "adam",
        "learning_rate": 1e-5,
        "weight_decay": 0.0,
        "selection_metric": "macro_f1",
        "reference": {"lr_schedule": "step"},
    }
