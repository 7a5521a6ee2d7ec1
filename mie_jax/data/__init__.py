"""Datasets bundled with mie_jax."""
