"""Training: configs, the methods (MIE and its peers), and the run driver."""

from mie_jax.train.config import METHODS, TrainConfig, make_config
from mie_jax.train.trainer import evaluate, train

__all__ = ["METHODS", "TrainConfig", "evaluate", "make_config", "train"]
