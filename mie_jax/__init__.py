"""mie-jax: balanced multimodal learning in JAX, built around MIE.

The optimizer pieces compose with any optax chain::

  tx = optax.chain(mie_jax.sam(rho=0.05), mie_jax.flat_projection(),
                   optax.sgd(1e-2, momentum=0.9))
"""

from mie_jax.flat import flat_layer
from mie_jax.flat import flat_projection
from mie_jax.flat import flat_rank
from mie_jax.flat import flat_transform
from mie_jax.flat import flat_transforms
from mie_jax.flat import LowRankTransform
from mie_jax.flat import update_conv_covariance
from mie_jax.flat import update_covariance
from mie_jax.mla import orthogonal_projection
from mie_jax.mla import OrthogonalProjectionState
from mie_jax.mla import owm_projection_update
from mie_jax.sam import sam
from mie_jax.sam import sam_perturbation

__version__ = "0.1.0"

__all__ = [
    "flat_layer",
    "flat_projection",
    "flat_rank",
    "flat_transform",
    "flat_transforms",
    "LowRankTransform",
    "orthogonal_projection",
    "OrthogonalProjectionState",
    "owm_projection_update",
    "sam",
    "sam_perturbation",
    "update_conv_covariance",
    "update_covariance",
]
