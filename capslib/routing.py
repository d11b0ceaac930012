"""Routing by agreement (Sabour et al. 2017, Procedure 1).

Gradient choice: the logits b are updated from ``stop_gradient(u_hat)`` in the
inner iterations, so back-propagation sees the final coupling coefficients as
constants and flows only through the last weighted sum ``s = sum_i c_ij u_hat``.
The paper leaves this open; this is the choice of the widely copied Keras
implementation (X. Guo's CapsNet-Keras), while the authors' own code
(Sarasra/models, research/capsules) back-propagates through every round. It is
faster than back-propagating through every iteration
(``stop_inner_gradients=False``): notebook 03 (section 5) times one gradient
of the routing both ways on the machine it runs on. Whether the two train
equally well is not measured.
"""
import numpy as np
from keras import ops

from capslib.ops import squash


def routing_by_agreement(u_hat, iterations=3, stop_inner_gradients=True):
    """Route prediction vectors to parent capsules.

    Args:
        u_hat: (batch, n_in, n_out, d_out) prediction vectors.
        iterations: number of routing rounds r (>= 1; the paper uses 3).
        stop_inner_gradients: see the module docstring.

    Returns:
        ``(v, c)``: parent capsules (batch, n_out, d_out), squashed, and the
        final coupling coefficients (batch, n_in, n_out), a softmax over the
        parent axis (each child's coefficients sum to 1).
    """
    for v, c in routing_rounds(u_hat, iterations, stop_inner_gradients):
        pass
    return v, c


def routing_rounds(u_hat, iterations=3, stop_inner_gradients=True):
    """Yield ``(v, c)`` after each routing round: the couplings of round 1
    (uniform), then of round 2, ...; the last pair is ``routing_by_agreement``'s."""
    iterations = int(iterations)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    u_hat = ops.convert_to_tensor(u_hat)
    if len(u_hat.shape) != 4:
        raise ValueError(
            "u_hat must have shape (batch, n_in, n_out, d_out), "
            f"got shape {tuple(u_hat.shape)}")
    u_hat_routing = ops.stop_gradient(u_hat) if stop_inner_gradients else u_hat
    # Logits start at zero: every child is coupled evenly to all parents.
    logits = ops.zeros_like(u_hat[..., 0])
    # A Python loop: `iterations` is a constant, so the compiled graph simply
    # holds `iterations` copies of the step (no while-loop needed).
    for r in range(iterations):
        c = ops.softmax(logits, axis=2)
        last = r == iterations - 1
        s = ops.einsum("bij,bijk->bjk", c, u_hat if last else u_hat_routing)
        v = squash(s)
        if not last:
            # Agreement: the scalar product of each prediction with its parent.
            logits = logits + ops.einsum("bijk,bjk->bij", u_hat_routing, v)
        yield v, c


def coupling_entropy(c):
    """Entropy (nats) of each child's couplings: c (..., n_parents) -> (...).

    log(n_parents) when a child splits its output evenly (before routing),
    0 when it sends everything to one parent (0 log 0 counts as 0). NumPy.
    """
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(c > 0, c * np.log(c), 0.0)
    return -terms.sum(axis=-1)
