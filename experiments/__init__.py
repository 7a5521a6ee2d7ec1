"""Experiments: ``python -m experiments.run`` and the per-dataset configs."""
