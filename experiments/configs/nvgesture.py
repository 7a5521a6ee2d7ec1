"""NVGesture (RGB, depth and optical-flow clips, 25 gestures): the paper's three-modality setting.

NVIDIA's list files and videos plus precomputed flow (see
``mie_jax.data.builders.nvgesture``); 10% of every training class is held out
for model selection. Clips are 8 frames of 112 x 112 by default
(``--set num_frames=... image_size=...``).

  python -m experiments.run --dataset nvgesture --data-dir /data/nvGesture_v1
"""

from experiments.configs import paper


def get_config() -> dict:
    return {
        **paper.METHOD, **paper.SGD,
        # The released code's order and stages: 50 epochs per modality, twice round.
        "modalities": ("depth", "rgb", "flow"),
        "phase_schedule": (50,),
        "outer_iterations": 2,
        "encoder": "i3d",
        "dim": 1024,
        "batch_size": 4,
        # Section 4.2.3: 6 for NVGesture.
        "covariance_batch_size": 6,
        "rho": 1e-10,
        "selection_metric": "macro_f1",
        "reference": paper.REFERENCE,
    }
