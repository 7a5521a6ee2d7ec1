"""UCI Multiple Features (mfeat), shipped with the package: the default dataset.

A strong and a weak view of the same digits (fac: profile correlations, about
0.97 accuracy alone; mor: six morphological features, about 0.74), so the
imbalance MIE addresses is built in. Other pairs: ``--set modalities=pix,fou``;
three views: ``--set modalities=fac,mor,zer``.

  python -m experiments.run --dataset mfeat --method mie
"""


def get_config() -> dict:
    return {
        "modalities": ("fac", "mor"),
        "dim": 128,
        "encoder_hidden": 256,
        "outer_iterations": 4,
        "phase_epochs": 3,
        "batch_size": 64,
        # The paper's values for the method itself (section 4.2.3).
        "covariance_batch_size": 12,
        "tau": 0.4,
        "optimizer": "sgd",
        "learning_rate": 1e-2,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        # Feature vectors are not images: the paper's rho of 1e-15..1e-10 would
        # be a no-op in float32, so a SAM radius in the usual range is used.
        "rho": 0.05,
        "selection_metric": "accuracy",
    }
