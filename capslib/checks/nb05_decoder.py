"""Notebook 05_decoder's checks: ``check_mask_poses`` (only the label's
capsule kept, flattened) and ``check_reconstruction_loss`` (a sum of squared
errors per image)."""
import keras
import numpy as np

from capslib import layers, losses
from capslib.checks._core import _, _check_gradient, _Checker, _exercise_check


# -- 9. mask_poses ------------------------------------------------------------

@_exercise_check
def check_mask_poses(fn, seed=0):
    """mask_poses(poses, labels) -> (batch, n_caps * dims), like capslib's Mask.

    NumPy is accepted here (no gradient check): the course's own answer in
    05_decoder is written with NumPy and the notebook uses mask_poses only on
    NumPy arrays, to draw; the model masks with capslib's Mask layer.
    """
    c = _Checker("mask_poses", reference=_("capslib's Mask"))
    rng = np.random.default_rng(seed)

    def verify(poses, labels, case):
        batch, n_caps, dims = poses.shape
        got = c.array(c.run(fn, poses.copy(), labels.copy(), case=case), case)
        # float32 whatever the global dtype policy (a notebook may set mixed precision).
        want = keras.ops.convert_to_numpy(
            layers.Mask(dtype="float32")(poses, labels=labels))
        keep = np.eye(n_caps)[labels][:, :, None]
        c.compare(
            got, want, case,
            mistakes=[
                (_("does not flatten: reshape the masked poses to (batch, n_caps * dims)"),
                 lambda: poses * keep),
                (_("inverts the mask: it keeps every capsule except the label's; keep only "
                   "capsule `label`"), lambda: (poses * (1 - keep)).reshape(batch, -1)),
                (_("flattens in the wrong order (pose dimensions before capsules): reshape "
                   "(batch, n_caps, dims) directly, without transposing"),
                 lambda: (poses * keep).transpose(0, 2, 1).reshape(batch, -1)),
                (_("keeps pose dimension `label` of every capsule instead of capsule "
                   "`label`: the one-hot mask selects along the capsule axis, shape "
                   "(batch, n_caps, 1)"),
                 lambda: (poses * np.eye(dims)[labels][:, None, :]).reshape(batch, -1)),
            ],
            shape_rule=_("expected (batch, n_caps * dims) = {shape}", shape=want.shape))

    verify(rng.normal(size=(3, 4, 5)).astype(np.float32), np.array([2, 0, 3]),
           _("poses (3, 4, 5) with labels [2, 0, 3]"))
    c.ok(_("poses (3, 4, 5): only the label's capsule kept, flattened capsule by capsule"))
    verify(rng.normal(size=(2, 10, 16)).astype(np.float32),
           np.array([9, 0], np.int32), _("poses (2, 10, 16) with int32 labels [9, 0]"))
    c.ok(_("the paper's class capsules (2, 10, 16), first and last class"))
    c.done()


# -- 10. reconstruction_loss --------------------------------------------------

@_exercise_check
def check_reconstruction_loss(fn, seed=0):
    """reconstruction_loss(images, reconstructions) -> sum of squared errors per image."""
    c = _Checker("reconstruction_loss")
    rng = np.random.default_rng(seed)

    def verify(images, reconstructions, case):
        got = c.array(c.run(fn, images.copy(), reconstructions.copy(), case=case), case)
        want = keras.ops.convert_to_numpy(
            losses.reconstruction_loss(images, reconstructions))
        diff = (images.astype(np.float64) - reconstructions).reshape(len(images), -1)
        sse = np.sum(diff ** 2, axis=-1)
        no_square = _("forgets the square (absolute error): sum the squared pixel errors")
        c.compare(
            got, want, case,
            mistakes=[
                (_("averages over the pixels ({pixels} times smaller): sum the "
                   "squared errors over the pixels", pixels=diff.shape[1]),
                 lambda: np.mean(diff ** 2, axis=-1)),
                (_("returns the batch mean (one number): return one loss per image, "
                   "shape (batch,)"), lambda: np.mean(sse)),
                (_("sums over the whole batch (one number): sum over each image's pixels "
                   "only, one loss per image"), lambda: np.sum(sse)),
                (no_square, lambda: np.sum(np.abs(diff), axis=-1)),
                (no_square, lambda: np.sum(diff, axis=-1)),
                (_("takes the square root of the sum (a distance, not a squared error): "
                   "return the sum of squared errors itself"), lambda: np.sqrt(sse)),
            ],
            shape_rule=_("it must return one loss per image, shape (batch,) = {shape}",
                         shape=want.shape))

    images = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    reconstructions = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    verify(images, reconstructions, _("images (3, 28, 28, 1)"))
    # The decoder trains through this loss: a gradient must reach the reconstructions.
    _check_gradient(c, lambda r: fn(images, r), reconstructions,
                    [lambda r: losses.reconstruction_loss(images, r)],
                    _("with respect to the reconstructions"))
    c.ok(_("images (3, 28, 28, 1): one sum of squared errors per image"))
    verify(images.reshape(3, 784), reconstructions.reshape(3, 784), _("flat images (3, 784)"))
    c.ok(_("flat images (3, 784)"))
    verify(images, images.copy(), _("a perfect reconstruction"))
    c.ok(_("a perfect reconstruction: loss 0"))
    c.done()
