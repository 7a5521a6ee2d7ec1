"""NVGesture (RGB, depth and optical-flow clips, 25 gestures): the paper's three-modality setting.

NVIDIA's list files and videos plus precomputed flow (see
``mie_jax.data.builders.nvgesture``); 10% of every training class is held out
for model selection. Clips are 8 frames of 112 x 112 by default
(``--set num_frames=... image_size=...``).

Pretrained weights: the paper follows Wu et al., whose I3D branches start from
the Kinetics-trained, ImageNet-inflated I3D: pytorch-i3d's ``rgb_imagenet.pt``
for RGB and for depth (its 1-channel stem is the mean of the RGB filters) and
``flow_imagenet.pt`` for optical flow. Load the ``.pt`` files where torch is
installed, or convert them once with ``python -m mie_jax.models.convert``
(below: to rgb.safetensors and flow.safetensors). With pretrained I3D weights,
uint8 frames are scaled to [-1, 1], as pytorch-i3d's loaders scale them. A run
without them warns at its start.

  python -m experiments.run --dataset nvgesture --data-dir /data/nvGesture_v1
      --set model.encoder_weights=rgb=/w/rgb.safetensors,depth=/w/rgb.safetensors,flow=/w/flow.safetensors
"""

from experiments.configs import merge, paper

# The pretrained weights the paper's setting assumes, by modality (paper.missing_pretrained_warning).
PRETRAINED_WEIGHTS = {
    "rgb": "I3D RGB, --set model.encoder_weights=rgb=rgb_imagenet.safetensors",
    "depth": "I3D RGB (stem averaged), --set model.encoder_weights=depth=rgb_imagenet.safetensors",
    "flow": "I3D flow, --set model.encoder_weights=flow=flow_imagenet.safetensors",
}


def get_config() -> dict:
    return merge(
        paper.METHOD,
        paper.SGD,
        {
            # The released code's order and stages: 50 epochs per modality, twice round.
            "modalities": ("depth", "rgb", "flow"),
            "train": {"phase_schedule": (50,), "outer_iterations": 2, "batch_size": 4, "selection_metric": "macro_f1"},
            "model": {"encoder": "i3d", "dim": 1024},
            # Section 4.2.3: 6 for NVGesture.
            "mie": {"covariance_batch_size": 6},
            "sam": {"rho": 1e-10},
            "reference": paper.REFERENCE,
        },
    )
