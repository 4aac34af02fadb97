"""Integration rules for Integrated Gradients, as pure functions (Captum's conventions)."""

from __future__ import annotations

import numpy as np

from .errors import InputError

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def approximation_parameters(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (step_sizes, alphas), each an ndarray of shape (n_steps,), for integrating over [0, 1]."""
    if method not in METHODS:
        raise InputError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise InputError(f"n_steps must be a positive integer, got {n_steps!r}")
    n = int(n_steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * weights, 0.5 * (nodes + 1.0)
    if method == "riemann_trapezoid":
        if n < 2:
            raise InputError("riemann_trapezoid needs n_steps >= 2")
        # Captum's convention, kept for parity: steps of 1/n with halved end points, so the weights sum to 1 - 1/n
        steps = np.full(n, 1.0 / n)
        steps[0] = steps[-1] = 0.5 / n
        return steps, np.linspace(0.0, 1.0, n)
    steps = np.full(n, 1.0 / n)
    if method == "riemann_left":
        return steps, np.linspace(0.0, 1.0 - 1.0 / n, n)
    if method == "riemann_right":
        return steps, np.linspace(1.0 / n, 1.0, n)
    return steps, np.linspace(0.5 / n, 1.0 - 0.5 / n, n)
