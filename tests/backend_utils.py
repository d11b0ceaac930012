"""Gradients with whichever Keras backend runs the tests (TensorFlow or JAX)."""
import keras
import numpy as np


def gradient(fn, x):
    """d sum(fn(x)) / dx as a NumPy array."""
    backend = keras.backend.backend()
    x = np.asarray(x, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf
        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = tf.reduce_sum(fn(xt))
        return tape.gradient(y, xt).numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp
        return np.asarray(jax.grad(lambda a: jnp.sum(fn(a)))(jnp.asarray(x)))
    if backend == "torch":
        import torch
        xt = torch.tensor(x, requires_grad=True)
        torch.sum(fn(xt)).backward()
        return xt.grad.numpy()
    raise NotImplementedError(backend)


def numpy(x):
    return keras.ops.convert_to_numpy(x)
