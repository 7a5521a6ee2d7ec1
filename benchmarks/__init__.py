"""Benchmarks of mie-jax's training steps (not tests: nothing here asserts on timings)."""
