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
# test.sh runs the suite in parallel processes (pytest-xdist): each has its own cache, since
# JAX writes entries without locking and one process could read another's half-written entry.
_CACHE = "mie_jax_test_xla_cache" + os.environ.get("PYTEST_XDIST_WORKER", "")
jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), _CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
