"""NVGesture (RGB, depth and optical-flow clips, 25 gestures): the paper's three-modality setting.

NVIDIA's list files and videos plus precomputed flow (see
``mie_jax.data.builders.nvgesture``); 10% of every training class is held out
for model selection. Clips are 8 frames of 112 x 112 by default
(``--set num_frames=... image_size=...``).

  python -m experiments.run --dataset nvgesture --data-dir /data/nvGesture_v1
"""


def get_config() -> dict:
    return {
        # The released code's order.
        "modalities": ("depth", "rgb", "flow"),
        "encoder": "i3d",
        "dim": 1024,
        # The released code's stages: 50 epochs per modality, twice round.
        "phase_schedule": (50,),
        "outer_iterations": 2,
        "batch_size": 4,
        # Section 4.2.3: 6 for NVGesture.
        "covariance_batch_size": 6,
        "tau": 0.4,
        "rho": 1e-10,
        "optimizer": "sgd",
        "learning_rate": 1e-2,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_schedule": "plateau",
        "selection_metric": "macro_f1",
        "reference": {"lr_schedule": "step"},
    }
