"""Shared test settings: hypothesis profiles sized for a 2-core CI machine."""

import os
import tempfile

import hypothesis
import jax

hypothesis.settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
hypothesis.settings.register_profile("dev", max_examples=25, deadline=None)
hypothesis.settings.load_profile("ci")

# Many tests compile the same programs (same model, same shapes): a compilation
# cache for the session lets later tests reuse them, which halves the suite's time.
jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "mie_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# test.sh runs the suite in parallel processes (pytest-xdist) that share the cache: a size limit makes
# JAX lock the cache directory around every read and write (filelock), so none reads a half-written entry.
jax.config.update("jax_compilation_cache_max_size", 8 * 2**30)
