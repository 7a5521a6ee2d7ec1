"""Kinetics-Sounds (audio + 3 video frames, 31 classes): the paper's second audio-visual setting.

Files in the layout of ``mie_jax.data.builders.kinetics_sounds``; 10% of every
training class is held out for model selection.

  python -m experiments.run --dataset kinetics_sounds --data-dir /data/kinetics_sounds
"""

from experiments.configs import merge, paper


def get_config() -> dict:
    return merge(
        paper.AUDIO_VISUAL,
        # The released code's stages.
        {"train": {"phase_schedule": (25, 50), "outer_iterations": 2}, "reference": paper.REFERENCE},
    )
