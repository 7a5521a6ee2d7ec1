"""Numerics of the paper's analyses (loss landscape, head spectra); experiments.analyses drives them."""
