"""Kinetics-Sounds (audio + 3 video frames, 31 classes): the paper's second audio-visual setting.

Files in the layout of ``mie_jax.data.builders.kinetics_sounds``; 10% of every
training class is held out for model selection.

  python -m experiments.run --dataset kinetics_sounds --data-dir /data/kinetics_sounds
"""


def get_config() -> dict:
    return {
        "modalities": ("audio", "visual"),
        "encoder": "audio=resnet18,visual=frames_resnet18",
        "dim": 512,
        # The released code's stages.
        "phase_schedule": (25, 50),
        "outer_iterations": 2,
        "batch_size": 64,
        "covariance_batch_size": 12,
        "tau": 0.4,
        "rho": 1e-10,
        "optimizer": "sgd",
        "learning_rate": 1e-2,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_schedule": "plateau",
        "selection_metric": "accuracy",
        "reference": {"lr_schedule": "step"},
    }
