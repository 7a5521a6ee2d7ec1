"""Every training method, one module each; importing a module registers its methods.

This list is the registry's table of contents (:mod:`mie_jax.train.registry`):
a new method is a new module here plus its import line below.
"""

from mie_jax.train.methods import alternating  # noqa: F401  mie, mie_no_sam, mie_no_gm, unimodal
from mie_jax.train.methods import joint  # noqa: F401  joint, ogm_ge
from mie_jax.train.methods import mla  # noqa: F401  mla
from mie_jax.train.methods import greedy  # noqa: F401  greedy
from mie_jax.train.methods import pmr  # noqa: F401  pmr
from mie_jax.train.methods import agm  # noqa: F401  agm
from mie_jax.train.methods import gblending  # noqa: F401  gblending
from mie_jax.train.methods import mslr  # noqa: F401  mslr
