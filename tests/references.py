"""Float64 numpy references for the paper's equations, written from the text."""

import numpy as np


def sam_perturbation(grads, rho, per_tensor=False):
    """Eq. 3: eps = rho * g / ||g||_2 for a list of arrays."""
    grads = [np.asarray(g, np.float64) for g in grads]
    if per_tensor:
        norms = [np.sqrt(np.sum(g**2)) for g in grads]
        return [rho * g / n if n > 0 else np.zeros_like(g) for g, n in zip(grads, norms)]
    norm = np.sqrt(sum(np.sum(g**2) for g in grads))
    return [rho * g / norm if norm > 0 else np.zeros_like(g) for g in grads]


def covariance(batches):
    """Eq. 5: sum over batches of zbar_t zbar_t^T."""
    batches = [np.asarray(z, np.float64) for z in batches]
    d = batches[0].shape[1]
    total = np.zeros((d, d))
    for z in batches:
        zbar = z.mean(axis=0)
        total += np.outer(zbar, zbar)
    return total


def flat_transform(cov, tau):
    """Eq. 7 through the SVD, as the paper writes it."""
    u, s, _ = np.linalg.svd(np.asarray(cov, np.float64))
    if s.max() - s.min() == 0:
        return np.eye(len(s))
    sigma = np.exp(-tau * (s - s.min()) / (s.max() - s.min()))
    return u @ np.diag(sigma) @ u.T


def owm_update(p, features, alpha):
    """OWM's recursive projection update followed by Frobenius normalisation."""
    p = np.asarray(p, np.float64)
    x = np.asarray(features, np.float64).mean(axis=0)[:, None]
    p = p - p @ x @ x.T @ p / (alpha + (x.T @ p @ x).item())
    return p / np.linalg.norm(p)
