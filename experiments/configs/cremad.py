"""CREMA-D (audio + video frames, 6 emotions): the paper's audio-visual setting.

Files as the audio-visual peers lay them out (see
``mie_jax.data.builders.cremad``); 10% of every training class is held out for
model selection, the published test split is reported.

  python -m experiments.run --dataset cremad --data-dir /data/CREMA-D
  python -m experiments.run --dataset cremad --data-dir /data/CREMA-D --variant reference
"""

from experiments.configs import merge, paper


def get_config() -> dict:
    return merge(
        paper.AUDIO_VISUAL,
        # The paper gives no phase length; these are the released code's stages.
        {"train": {"phase_schedule": (25, 50), "outer_iterations": 3}, "reference": paper.REFERENCE},
    )
