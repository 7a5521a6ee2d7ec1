"""Training: configs in sections, the method registry and its methods, and the run driver."""

from mie_jax.train import methods  # noqa: F401  (registers every method)
from mie_jax.train.config import TrainConfig, make_config
from mie_jax.train.registry import MethodSpec, register
from mie_jax.train.trainer import evaluate, train

__all__ = ["MethodSpec", "TrainConfig", "evaluate", "make_config", "register", "train"]
