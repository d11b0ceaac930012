"""The CapsNet of Sabour et al. (2017) as one Keras model.

conv 256@9x9 (ReLU) -> 1152 primary 8D capsules -> 10 class capsules of 16D
(routing by agreement) -> lengths; a decoder 512-1024-784 (sigmoid) rebuilds
the image from the pose of one capsule: the true class while training, the
predicted class otherwise.
"""
import keras
import numpy as np
from keras import ops

from capslib.data import check_images
from capslib.layers import DigitCapsules, Length, Mask, PrimaryCapsules
from capslib.losses import RECONSTRUCTION_WEIGHT, MarginLoss, ReconstructionLoss
from capslib.routing import routing_rounds


class ConfigModel(keras.Model):
    """A model whose constructor arguments are its config (``self._config``),
    and whose metrics skip the outputs that have no target (CapsNet's poses)."""

    def get_config(self):
        return {**super().get_config(), **self._config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        config.pop("dtype", None)
        return cls(**config)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Keras matches metrics to every output; an output without target has none.
        if isinstance(y, dict) and isinstance(y_pred, dict):
            y_pred = {k: v for k, v in y_pred.items() if k in y}
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # -- inputs checked before Keras touches the model's state ------------------------
    # Under JAX, predict/fit/evaluate take the weights out of the model for the
    # length of the loop; a step that fails on its first batch leaves them out
    # (every later call: "'NoneType' object is not callable"). So the images are
    # checked first, and whatever else fails puts the weights back.

    def _image_limits(self):
        """(smallest image side the layers take, why), or (None, "")."""
        return None, ""

    def check_images(self, images):
        """Raise a one-line ValueError with the fix unless ``images`` is a batch
        this model takes: shape (batch, *image_shape), float, finite, in [0, 1].
        Symbolic tensors (inside a compiled step) get their shape and dtype checked."""
        min_side, why = self._image_limits()
        values = _concrete(images)
        check_images(images if values is None else values, self.image_shape,
                     who=type(self).__name__, min_side=min_side, min_side_why=why)

    _check_images = check_images  # the name capslib.explore uses

    def _images_in(self, x):
        """The images in a model input: an array, a dict with ``"image"`` or
        (images, labels); None for what comes batch by batch (a PyDataset,
        checked when it was made; tf.data; a generator)."""
        if isinstance(x, dict):
            if "image" not in x:
                raise ValueError(f"{type(self).__name__} takes images or a dict with keys "
                                 f"'image' and 'label'; got keys {sorted(x)}")
            x = x["image"]
        elif isinstance(x, (list, tuple)) and x:
            x = x[0]
        return x if hasattr(x, "shape") and hasattr(x, "dtype") else None

    def _check_x(self, x):
        images = self._images_in(x)
        if images is not None:
            self.check_images(images)

    def __call__(self, *args, **kwargs):
        # Before Keras wraps the call's errors in several lines of context.
        self._check_x(args[0] if args else kwargs.get("inputs"))
        return super().__call__(*args, **kwargs)

    def _guarded(self, method, *args, **kwargs):
        if keras.backend.backend() != "jax":
            return method(*args, **kwargs)
        saved = [(v, v.value) for v in self._jax_variables()]
        try:
            return method(*args, **kwargs)
        except BaseException:
            self._restore_jax_variables(saved)
            raise

    def _jax_variables(self):
        found = list(self.variables)
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None:
            found += list(optimizer.variables)
        found += list(getattr(self, "metrics_variables", []))
        unique, seen = [], set()
        for v in found:
            if id(v) not in seen:
                seen.add(id(v))
                unique.append(v)
        return unique

    def _restore_jax_variables(self, saved):
        """After a failed predict/fit/evaluate under JAX: the state of the last
        finished step if Keras kept one, else the values from before the call."""
        if getattr(self, "_jax_state", None) and not getattr(self, "_jax_state_synced", True):
            self.jax_state_sync()
        self._jax_state = None
        for v, value in saved:
            deleted = getattr(value, "is_deleted", lambda: False)()  # donated to a step
            if getattr(v, "_value", 0) is None and not deleted:
                v.assign(value)

    def predict(self, x, *args, **kwargs):
        self._check_x(x)
        return self._guarded(super().predict, x, *args, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_x(x)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (list, tuple)) and validation:
            self._check_x(validation[0])
        return self._guarded(super().fit, x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_x(x)
        return self._guarded(super().evaluate, x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        self._check_x(x)
        return super().predict_on_batch(x)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        self._check_x(x)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        self._check_x(x)
        return super().test_on_batch(x, y, *args, **kwargs)


def _concrete(x):
    """``x`` as a NumPy array when it holds values (NumPy, an eager tensor, a
    JAX array), None when symbolic (a traced or graph tensor, a KerasTensor)."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, keras.KerasTensor):
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return None if isinstance(x, jax.core.Tracer) else np.asarray(x)
    if backend == "tensorflow":
        import tensorflow as tf
        return x.numpy() if tf.executing_eagerly() and hasattr(x, "numpy") else None
    return None


@keras.saving.register_keras_serializable(package="capslib")
class CapsNet(ConfigModel):
    """Inputs: images (batch, 28, 28, 1) float in [0, 1], or a dict
    ``{"image": images, "label": int labels}`` (labels are used to mask only
    when ``training=True``). Outputs: a dict with ``lengths`` (batch, 10),
    ``poses`` (batch, 10, 16) and, with a decoder, ``reconstruction``
    (batch, 28, 28, 1).
    """

    digit_caps_class = DigitCapsules  # the benchmark swaps in a naive one

    def __init__(self, image_shape=(28, 28, 1), n_classes=10, conv_filters=256,
                 conv_kernel=9, primary_maps=32, primary_dims=8, primary_kernel=9,
                 primary_strides=2, digit_dims=16, routing_iterations=3,
                 stop_inner_gradients=True, decoder_units=(512, 1024), decoder=True,
                 name="capsnet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        # The first window of each "valid" convolution, whatever the stride.
        self._min_side = int(conv_kernel) + int(primary_kernel) - 1
        self._min_side_why = (f"conv {conv_kernel}x{conv_kernel}, then primary capsules "
                              f"{primary_kernel}x{primary_kernel} stride {primary_strides}")
        if len(self.image_shape) != 3 or min(self.image_shape[:2]) < self._min_side:
            raise ValueError(
                f"image_shape {self.image_shape}: must be (height, width, channels) with "
                f"height and width at least {self._min_side} ({self._min_side_why})")
        self.n_classes, self.digit_dims = int(n_classes), int(digit_dims)
        self.routing_iterations = int(routing_iterations)
        self.has_decoder = bool(decoder)
        self._config = dict(
            image_shape=list(self.image_shape), n_classes=self.n_classes,
            conv_filters=conv_filters, conv_kernel=conv_kernel,
            primary_maps=primary_maps, primary_dims=primary_dims,
            primary_kernel=primary_kernel, primary_strides=primary_strides,
            digit_dims=digit_dims, routing_iterations=routing_iterations,
            stop_inner_gradients=stop_inner_gradients,
            decoder_units=list(decoder_units), decoder=self.has_decoder)
        self.conv1 = keras.layers.Conv2D(conv_filters, conv_kernel, activation="relu",
                                         name="conv1")
        self.primary_caps = PrimaryCapsules(primary_maps, primary_dims, primary_kernel,
                                            primary_strides, name="primary_caps")
        # Routing and lengths stay float32 under mixed precision.
        self.digit_caps = self.digit_caps_class(n_classes, digit_dims, routing_iterations,
                                        stop_inner_gradients, name="digit_caps",
                                        dtype="float32")
        self.lengths = Length(name="lengths", dtype="float32")
        self.mask = Mask(name="mask")
        if self.has_decoder:
            self.decoder = keras.Sequential(
                [keras.layers.Dense(u, activation="relu", name=f"decoder_dense{k + 1}")
                 for k, u in enumerate(decoder_units)]
                + [keras.layers.Dense(int(np.prod(self.image_shape)), activation="sigmoid",
                                      name="decoder_pixels"),
                   keras.layers.Reshape(self.image_shape, name="decoder_image")],
                name="decoder")

    # -- Keras plumbing ---------------------------------------------------
    def build(self, input_shape=None):
        shape = (None, *self.image_shape)
        self.conv1.build(shape)
        shape = self.conv1.compute_output_shape(shape)
        self.primary_caps.build(shape)
        shape = self.primary_caps.compute_output_shape(shape)
        self.digit_caps.build(shape)
        shape = self.digit_caps.compute_output_shape(shape)
        self.lengths.build(shape)
        self.mask.build(shape)
        if self.has_decoder:
            self.decoder.build((None, self.n_classes * self.digit_dims))
        self.built = True

    # -- forward pass -------------------------------------------------------
    def _split_inputs(self, inputs):
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"image", "label"}
            if "image" not in inputs or unknown:
                raise ValueError(
                    "CapsNet takes images or a dict with keys 'image' and 'label'; "
                    f"got keys {sorted(inputs)}")
            return inputs["image"], inputs.get("label")
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError("CapsNet takes images or (images, labels); "
                                 f"got a sequence of {len(inputs)} items")
            return inputs[0], inputs[1]
        return inputs, None

    def _image_limits(self):
        return self._min_side, self._min_side_why

    def encode(self, images, return_couplings=False):
        """Images -> class capsules (batch, n_classes, dims) [and couplings]."""
        self.check_images(images)
        features = self.conv1(images)
        primary = self.primary_caps(features)
        return self.digit_caps(primary, return_couplings=return_couplings)

    def call(self, inputs, training=False):
        images, labels = self._split_inputs(inputs)
        poses = self.encode(images)
        lengths = self.lengths(poses)
        outputs = {"lengths": lengths, "poses": poses}
        if self.has_decoder:
            masked = self.mask(poses, lengths=lengths, labels=labels if training else None)
            outputs["reconstruction"] = self.decoder(masked)
        return outputs

    # -- tools for notebooks ----------------------------------------------------
    def decode(self, poses, labels):
        """Rebuild images from poses (batch, n_classes, dims), masked by ``labels``."""
        if not self.has_decoder:
            raise ValueError("this CapsNet was built with decoder=False")
        labels = np.asarray(labels)
        if labels.ndim == 1:
            check_labels(labels, self.n_classes)
        poses = ops.convert_to_tensor(np.asarray(poses, dtype="float32"))
        return ops.convert_to_numpy(self.decoder(self.mask(poses, labels=labels)))

    def coupling_coefficients(self, images):
        """Final routing coefficients c (batch, 1152, n_classes) as a NumPy array."""
        images = np.asarray(images)
        self.check_images(images)  # before a cast would hide uint8 pixels
        _, c = self.encode(ops.convert_to_tensor(images.astype("float32")),
                           return_couplings=True)
        return ops.convert_to_numpy(c)

    def routing_trace(self, images):
        """NumPy arrays: the couplings of each routing round (rounds, batch,
        1152, n_classes), the primary capsules' lengths (batch, 1152) and the
        class capsules' lengths (batch, n_classes)."""
        images = np.asarray(images)
        self.check_images(images)
        images = ops.convert_to_tensor(images.astype("float32"))
        primary = self.primary_caps(self.conv1(images))
        u_hat = self.digit_caps.predictions(primary)
        rounds = list(routing_rounds(u_hat, self.routing_iterations,
                                     self.digit_caps.stop_inner_gradients))
        couplings = np.stack([ops.convert_to_numpy(c) for _, c in rounds])
        last_v = rounds[-1][0]
        return (couplings, ops.convert_to_numpy(ops.norm(primary, axis=-1)),
                ops.convert_to_numpy(self.lengths(last_v)))


def check_labels(labels, n_classes=10):
    """Raise a ValueError unless labels are integers in [0, n_classes)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers 0..{n_classes - 1}, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}, "
                         f"got values from {labels.min()} to {labels.max()}")


class ModelFileError(ValueError):
    """A model path that is missing, not a Keras model file, or not a CapsNet."""


# Loading a saved model is capslib.loading's (it sits above this module: it also
# loads the baseline and shipped folders). The old names are forwarded for the
# notebooks' `capslib.model.load_capsnet(...)`, imported only when asked for.
_FORWARDED = ("load_capsnet", "load_classifier")


def __getattr__(name):
    if name in _FORWARDED:
        from capslib import loading
        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_FORWARDED})


def build_capsnet(routing_iterations=3, decoder=True, stop_inner_gradients=True, **kwargs):
    """The paper's CapsNet, built (weights created) and ready to compile.

    ``count_params()`` is 8,215,568 with the defaults, 6,804,224 with
    ``decoder=False``. Any keyword of :class:`CapsNet` can be overridden.
    """
    model = CapsNet(routing_iterations=routing_iterations, decoder=decoder,
                    stop_inner_gradients=stop_inner_gradients, **kwargs)
    model.build((None, *model.image_shape))
    return model


def default_jit_compile():
    """JAX always compiles; TensorFlow only on a GPU (XLA was ~30x slower on CPU)."""
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        from capslib.device import has_gpu
        return has_gpu()
    return False


def learning_rate_schedule(learning_rate, lr_decay, steps_per_epoch=None):
    """``learning_rate`` times ``lr_decay`` per epoch (a constant without steps_per_epoch)."""
    if steps_per_epoch and lr_decay and lr_decay != 1.0:
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=int(steps_per_epoch), decay_rate=lr_decay,
            staircase=True)
    return learning_rate


def compile_capsnet(model, learning_rate=1e-3, lr_decay=0.95, steps_per_epoch=None,
                    reconstruction_weight=RECONSTRUCTION_WEIGHT, jit_compile=None):
    """Adam with a per-epoch exponential decay, margin + weighted reconstruction loss."""
    lr = learning_rate_schedule(learning_rate, lr_decay, steps_per_epoch)
    losses = {"lengths": MarginLoss()}
    weights = {"lengths": 1.0}
    if model.has_decoder:
        losses["reconstruction"] = ReconstructionLoss()
        weights["reconstruction"] = reconstruction_weight
    model.compile(
        optimizer=keras.optimizers.Adam(lr), loss=losses, loss_weights=weights,
        metrics={"lengths": [keras.metrics.CategoricalAccuracy(name="accuracy")]},
        jit_compile=default_jit_compile() if jit_compile is None else jit_compile)
    return model
