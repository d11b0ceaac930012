"""Vector operations for capsules: the norm and the squash non-linearity.

Both keep an epsilon *inside* the square root, so that the zero vector (a
capsule that saw nothing) has a finite value and a finite gradient.
"""
from keras import ops

DEFAULT_EPSILON = 1e-7


def safe_norm(s, axis=-1, epsilon=DEFAULT_EPSILON, keepdims=False):
    """Euclidean norm sqrt(sum(s**2) + epsilon): finite gradient at s = 0."""
    squared = ops.sum(ops.square(s), axis=axis, keepdims=keepdims)
    return ops.sqrt(squared + epsilon)


def squash(s, axis=-1, epsilon=DEFAULT_EPSILON):
    """Paper's eq. 1: v = |s|^2 / (1 + |s|^2) * s / |s|.

    Keeps the direction of ``s`` and maps its length into [0, 1) (float32 rounds it to 1 once |s| > ~4000).
    """
    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)
    scale = squared / (1.0 + squared) / ops.sqrt(squared + epsilon)
    return scale * s
