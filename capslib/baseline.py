"""The paper's baseline CNN (Sabour et al. 2017, section 5).

"three convolutional layers of 256, 256, 128 channels. Each has 5x5 kernels
and stride of 1. The last convolutional layers are followed by two fully
connected layers of size 328, 192. The last fully connected layer is
connected with dropout to a 10 class softmax layer with cross entropy loss."
The paper gives 35.4M parameters; 'same' padding and no pooling give
35,445,522, so that is what it used. Most of them, 32,915,784, are in the
first dense layer: without pooling it sees all 28 x 28 x 128 outputs of conv3
(notebook 08 counts each layer). Ours: ReLU activations and a dropout
rate of 0.5 (the paper names neither).

It takes the inputs CapsNet takes (images, or ``{"image", "label"}``) so
that ``capslib.train`` trains both with one job, and returns
``{"probabilities": (batch, 10)}``.
"""
import keras
from keras import ops

from capslib.model import ConfigModel, default_jit_compile, learning_rate_schedule

PACKAGE = "capslib"
OUTPUT = "probabilities"


@keras.saving.register_keras_serializable(package=PACKAGE)
class BaselineCNN(ConfigModel):
    """conv 256@5x5 -> conv 256@5x5 -> conv 128@5x5 -> FC 328 -> FC 192 -> dropout -> softmax."""

    def __init__(self, image_shape=(28, 28, 1), n_classes=10, conv_filters=(256, 256, 128),
                 kernel_size=5, dense_units=(328, 192), dropout=0.5, name="baseline_cnn",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.n_classes = int(n_classes)
        self._config = dict(image_shape=list(self.image_shape), n_classes=self.n_classes,
                            conv_filters=list(conv_filters), kernel_size=int(kernel_size),
                            dense_units=list(dense_units), dropout=float(dropout))
        self.convs = [keras.layers.Conv2D(f, kernel_size, padding="same", activation="relu",
                                          name=f"conv{k + 1}")
                      for k, f in enumerate(conv_filters)]
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense = [keras.layers.Dense(u, activation="relu", name=f"fc{k + 1}")
                      for k, u in enumerate(dense_units)]
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        # Softmax in float32 under mixed precision.
        self.classifier = keras.layers.Dense(n_classes, activation="softmax", name="softmax",
                                             dtype="float32")

    def build(self, input_shape=None):
        shape = (None, *self.image_shape)
        for layer in [*self.convs, self.flatten, *self.dense, self.dropout, self.classifier]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=False):
        images = inputs["image"] if isinstance(inputs, dict) else inputs
        shape = tuple(images.shape)
        if len(shape) != 4 or tuple(shape[1:]) != self.image_shape:
            raise ValueError(
                f"BaselineCNN expects images of shape (batch, "
                f"{', '.join(map(str, self.image_shape))}), got shape {shape}.")
        x = images
        for conv in self.convs:
            x = conv(x)
        x = self.flatten(x)
        for dense in self.dense:
            x = dense(x)
        x = self.dropout(x, training=training)
        return {OUTPUT: self.classifier(x)}


def build_baseline(**kwargs):
    """The paper's baseline CNN, built: ``count_params()`` is 35,445,522."""
    model = BaselineCNN(**kwargs)
    model.build((None, *model.image_shape))
    return model


def compile_baseline(model, learning_rate=1e-3, lr_decay=0.95, steps_per_epoch=None,
                     jit_compile=None):
    """The CapsNet recipe's optimizer and schedule, with cross-entropy loss."""
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate_schedule(learning_rate, lr_decay, steps_per_epoch)),
        loss={OUTPUT: keras.losses.CategoricalCrossentropy()},
        metrics={OUTPUT: [keras.metrics.CategoricalAccuracy(name="accuracy")]},
        jit_compile=default_jit_compile() if jit_compile is None else jit_compile)
    return model


def class_scores(outputs):
    """The (N, 10) class scores in a model's outputs: the baseline's softmax
    probabilities, or a CapsNet's capsule lengths."""
    key = OUTPUT if OUTPUT in outputs else "lengths"
    return ops.convert_to_numpy(outputs[key])
