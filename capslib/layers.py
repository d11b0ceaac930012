"""Capsule layers, registered for `.keras` saving (safe mode, no Lambda)."""
import keras
from keras import ops

from capslib.ops import safe_norm, squash
from capslib.routing import routing_by_agreement

PACKAGE = "capslib"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PrimaryCapsules(keras.layers.Layer):
    """A convolution whose channels are cut into capsules, then squashed.

    (batch, 20, 20, C) -> (batch, 6 * 6 * n_maps, dims) = (batch, 1152, 8) with
    the defaults. No ReLU before the squash: a ReLU would zero the negative
    coordinates and bend every capsule's direction into the positive orthant.
    """

    def __init__(self, n_maps=32, dims=8, kernel_size=9, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.n_maps, self.dims = int(n_maps), int(dims)
        self.kernel_size, self.strides = int(kernel_size), int(strides)
        self.conv = keras.layers.Conv2D(
            self.n_maps * self.dims, self.kernel_size, strides=self.strides,
            padding="valid", name="conv", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)

    def compute_output_shape(self, input_shape):
        h, w = self.conv.compute_output_shape(input_shape)[1:3]
        n = None if h is None or w is None else h * w * self.n_maps
        return (input_shape[0], n, self.dims)

    def call(self, inputs):
        maps = self.conv(inputs)
        # Channel c = map * dims + d: split the channels into (n_maps, dims).
        h, w = maps.shape[1], maps.shape[2]
        capsules = ops.reshape(maps, (-1, h * w * self.n_maps, self.dims))
        return squash(capsules)

    def get_config(self):
        return {**super().get_config(), "n_maps": self.n_maps, "dims": self.dims,
                "kernel_size": self.kernel_size, "strides": self.strides}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DigitCapsules(keras.layers.Layer):
    """Fully connected capsules with routing by agreement.

    W has shape (n_in, n_caps, dims, in_dims), N(0, 0.1) initial values. The
    prediction vectors u_hat[b, i, j] = W[i, j] @ u[b, i] come from one einsum:
    W is shared by the batch, never tiled per example.
    """

    def __init__(self, n_caps=10, dims=16, routing_iterations=3,
                 stop_inner_gradients=True, **kwargs):
        super().__init__(**kwargs)
        self.n_caps, self.dims = int(n_caps), int(dims)
        self.routing_iterations = int(routing_iterations)
        self.stop_inner_gradients = bool(stop_inner_gradients)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                "DigitCapsules expects inputs of shape (batch, n_in, in_dims) with "
                f"known n_in and in_dims, got {tuple(input_shape)}")
        n_in, in_dims = input_shape[1], input_shape[2]
        self.W = self.add_weight(
            name="W", shape=(n_in, self.n_caps, self.dims, in_dims),
            initializer=keras.initializers.RandomNormal(stddev=0.1))

    def predictions(self, inputs):
        """u_hat: (batch, n_in, in_dims) -> (batch, n_in, n_caps, dims)."""
        return ops.einsum("ijkd,bid->bijk", self.W, inputs)

    def call(self, inputs, return_couplings=False):
        u_hat = self.predictions(inputs)
        v, c = routing_by_agreement(
            u_hat, self.routing_iterations, self.stop_inner_gradients)
        return (v, c) if return_couplings else v

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_caps, self.dims)

    def get_config(self):
        return {**super().get_config(), "n_caps": self.n_caps, "dims": self.dims,
                "routing_iterations": self.routing_iterations,
                "stop_inner_gradients": self.stop_inner_gradients}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Length(keras.layers.Layer):
    """Capsule lengths (batch, n_caps, dims) -> (batch, n_caps): class scores in [0, 1)."""

    def call(self, inputs):
        return safe_norm(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class Mask(keras.layers.Layer):
    """Keep one capsule's pose, zero the others, flatten for the decoder.

    With ``labels`` (integers or one-hot) the true class is kept (training);
    without, the longest capsule (the prediction) is kept.
    """

    def call(self, poses, lengths=None, labels=None):
        n_caps = poses.shape[1]
        if labels is not None:
            if len(labels.shape) == 2:
                mask = ops.cast(labels, poses.dtype)
            else:
                mask = ops.one_hot(ops.cast(labels, "int32"), n_caps, dtype=poses.dtype)
        elif lengths is not None:
            mask = ops.one_hot(ops.argmax(lengths, axis=-1), n_caps, dtype=poses.dtype)
        else:
            raise ValueError("Mask needs `labels` or `lengths` to choose a capsule.")
        masked = poses * ops.expand_dims(mask, -1)
        return ops.reshape(masked, (-1, n_caps * poses.shape[2]))

    def compute_output_shape(self, input_shape, lengths_shape=None, labels_shape=None):
        # ``input_shape`` is the poses' shape; Keras' summary() passes it by this
        # name (the name of ``Layer.build``'s argument).
        return (input_shape[0], input_shape[1] * input_shape[2])
