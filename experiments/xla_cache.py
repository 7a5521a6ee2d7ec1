"""XLA's persistent compilation cache for the experiment drivers that train many runs."""

import os
import tempfile

import jax


def enable_compilation_cache() -> None:
    """Points XLA's persistent cache at a per-machine directory, unless one is already set.

    Every training run builds fresh jitted closures, so the same programs are compiled
    once per run; with the cache, all but the first compilation of each become a
    lookup (the seed only changes data, never the compiled program).
    """
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "mie_jax_xla_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
