"""capslib.checks: right answers pass, every named mistake is named, stubs stop."""
import ast
import math
import traceback
from pathlib import Path

import numpy as np
import pytest
from keras import ops

from capslib import checks


# -- Right answers, as a student would write them ------------------------------

def shift_image(image, dy, dx):
    h, w = image.shape[:2]
    pad = max(abs(dy), abs(dx))
    padded = np.pad(image, [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2))
    return padded[pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def stratified_split(labels, val_per_class, seed, replace=False, rng=None):
    rng = np.random.default_rng(seed) if rng is None else rng
    val = np.concatenate([rng.choice(np.flatnonzero(labels == k), val_per_class,
                                     replace=replace) for k in np.unique(labels)])
    return np.setdiff1d(np.arange(len(labels)), val), val


def squash(s, axis=-1, epsilon=1e-7):
    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)
    return squared / (1 + squared) * s / ops.sqrt(squared + epsilon)


def count_primary_capsules(height, width):
    h, w = height - 8, width - 8
    return ((h - 9) // 2 + 1) * ((w - 9) // 2 + 1) * 32


def prediction_vectors(W, u):
    return ops.einsum("ijkd,bid->bijk", W, u)


def routing(u_hat, iterations=3, axis=2, accumulate=True, squash_s=True, return_s=False,
            extra_update=False, rounds=None, couple=None):
    couple = couple or (lambda b: ops.softmax(b, axis=axis))
    b = ops.zeros_like(u_hat[..., 0])
    rounds = iterations if rounds is None else rounds(iterations)
    for r in range(rounds):
        c = couple(b)
        s = ops.einsum("bij,bijk->bjk", c, u_hat)
        v = squash(s) if squash_s else s
        if r < rounds - 1 or extra_update:
            agreement = ops.einsum("bijk,bjk->bij", u_hat, v)
            b = b + agreement if accumulate else agreement
    if extra_update:
        c = couple(b)
    return (s if return_s else v), c


def margin_loss(targets, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5,
                lambda_present=False, reduce=ops.sum, square=ops.square, clip=ops.relu):
    present = targets * square(clip(m_plus - lengths))
    absent = lambda_ * (1 - targets) * square(clip(lengths - m_minus))
    if lambda_present:
        present, absent = lambda_ * present, absent / lambda_
    return reduce(present + absent, axis=-1)


def capsule_lengths(poses):
    return ops.sqrt(ops.sum(ops.square(poses), axis=-1) + 1e-7)


def mask_poses(poses, labels):
    n_caps, dims = poses.shape[1], poses.shape[2]
    mask = ops.one_hot(labels, n_caps)
    return ops.reshape(poses * mask[:, :, None], (-1, n_caps * dims))


def reconstruction_loss(images, reconstructions):
    diff = ops.reshape(images - reconstructions, (images.shape[0], -1))
    return ops.sum(ops.square(diff), axis=-1)


def best_epoch(history):
    return int(np.argmin(history["val_loss"])) + 1


def two_proportion_z_test(acc_1, n_1, acc_2, n_2, variance=None, tail=None, sqrt=math.sqrt):
    p = (acc_1 * n_1 + acc_2 * n_2) / (n_1 + n_2)
    var = p * (1 - p) * (1 / n_1 + 1 / n_2) if variance is None else variance(
        acc_1, n_1, acc_2, n_2, p)
    z = (acc_1 - acc_2) / sqrt(var)
    p_value = math.erfc(abs(z) / math.sqrt(2)) if tail is None else tail(z)
    return z, p_value


def tweak_pose(poses, label, dim, steps):
    out = np.repeat(poses[None], len(steps), axis=0)
    out[:, label, dim] += np.asarray(steps, dtype=poses.dtype)
    return out


def confusion_matrix(y_true, y_pred, n_classes=10):
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def centre_of_ink(images):
    images = np.asarray(images, dtype=float)
    images = images[..., 0] if images.ndim == 4 else images
    rows, cols = np.indices(images.shape[1:])
    ink = images.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([(images * rows).sum(axis=(1, 2)) / ink,
                         (images * cols).sum(axis=(1, 2)) / ink], axis=1)


def _centre_variant(kind):
    def fn(images):
        if kind == "squeezed":
            return np.squeeze(centre_of_ink(images))
        if kind == "in place":
            out = centre_of_ink(images)
            images *= 2
            return out
        images = np.asarray(images, dtype=float)
        flat = images[..., 0] if images.ndim == 4 else images
        rows, cols = np.indices(flat.shape[1:])
        weighted = np.stack([(flat * rows).sum(axis=(1, 2)), (flat * cols).sum(axis=(1, 2))], 1)
        if kind == "swapped":
            return centre_of_ink(images)[:, ::-1]
        if kind == "unweighted":
            return centre_of_ink((flat > 0).astype(float))
        if kind == "darkest":
            return np.array([np.unravel_index(np.argmax(im), im.shape) for im in flat], float)
        if kind == "from 1":
            return centre_of_ink(images) + 1
        if kind == "no division":
            return weighted
        if kind == "per pixel":
            return weighted / flat[0].size
        if kind == "from the middle":
            return centre_of_ink(images) - (np.array(flat.shape[1:]) - 1) / 2
        if kind == "zero when empty":
            return np.nan_to_num(centre_of_ink(images))
        if kind == "channel kept":  # sums over rows and columns of (N, H, W, 1): (N, 2, 1)
            if images.ndim == 3:
                return centre_of_ink(images)
            ink = images.sum(axis=(1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.stack([(images * rows[..., None]).sum(axis=(1, 2)) / ink,
                                 (images * cols[..., None]).sum(axis=(1, 2)) / ink], axis=1)
        raise ValueError(kind)
    return fn


def coupling_entropy(c):
    c = np.asarray(c, dtype=float)
    return -np.sum(c * np.log(np.maximum(c, 1e-12)), axis=-1)


def accuracy_interval(accuracy, n, z=1.96):
    half = z * math.sqrt(accuracy * (1 - accuracy) / n)
    return max(0.0, accuracy - half), min(1.0, accuracy + half)


CORRECT = {  # check -> (right answer, number of ✓ lines)
    "shift_image": (shift_image, 6),
    "stratified_split": (stratified_split, 4),
    "squash": (squash, 6),
    "count_primary_capsules": (count_primary_capsules, 4),
    "prediction_vectors": (prediction_vectors, 3),
    "routing": (routing, 5),
    "margin_loss": (margin_loss, 7),
    "capsule_lengths": (capsule_lengths, 4),
    "mask_poses": (mask_poses, 2),
    "reconstruction_loss": (reconstruction_loss, 3),
    "best_epoch": (best_epoch, 3),
    "two_proportion_z_test": (two_proportion_z_test, 4),
    "tweak_pose": (tweak_pose, 2),
    "confusion_matrix": (confusion_matrix, 2),
    "centre_of_ink": (centre_of_ink, 4),
    "coupling_entropy": (coupling_entropy, 3),
    "accuracy_interval": (accuracy_interval, 3),
}


def check(name):
    return getattr(checks, f"check_{name}")


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_right_answer_passes(name, capsys):
    fn, n = CORRECT[name]
    assert check(name)(fn) is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == n + 1
    assert all(line.startswith("✓ ") for line in lines[:-1])
    assert lines[-1] == f"All {n} checks passed."


@pytest.mark.parametrize("name", ["shift_image", "stratified_split", "routing",
                                  "two_proportion_z_test"])
def test_printed_lines_do_not_depend_on_the_seed(name, capsys):
    fn, _ = CORRECT[name]
    check(name)(fn, seed=0)
    first = capsys.readouterr().out
    check(name)(fn, seed=1)
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_stub_raises_not_implemented(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check(name)(stub)


def test_student_errors_propagate_with_a_note():
    def broken(s, axis=-1, epsilon=1e-7):
        raise ValueError("my bug")

    with pytest.raises(ValueError, match="my bug") as info:
        checks.check_squash(broken)
    assert any("raised by your squash" in note for note in info.value.__notes__)


# -- Mistakes: each must be named --------------------------------------------

def _in_place_shift(image, dy, dx):
    image[...] = shift_image(image.copy(), dy, dx)
    return image


def _swapped_args(fn):
    return lambda image, dy, dx: fn(image, dx, dy)


def _unseeded_split(labels, val_per_class, seed):
    return stratified_split(labels, val_per_class, None)


def _masks_split(labels, val_per_class, seed):
    train, val = stratified_split(labels, val_per_class, seed)
    return np.isin(np.arange(len(labels)), train), np.isin(np.arange(len(labels)), val)


def _squash_no_epsilon(s, axis=-1, epsilon=1e-7):
    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)
    return squared / (1 + squared) * s / ops.sqrt(squared)


def _squash_epsilon_outside(s, axis=-1, epsilon=1e-7):
    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)
    return squared / (1 + squared) * s / (ops.sqrt(squared) + epsilon)


def _squash_where(s, axis=-1, epsilon=1e-7):
    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)
    v = squared / (1 + squared) * s / ops.sqrt(squared)
    return ops.where(squared > 0, v, ops.zeros_like(s))


def _squash_no_square(s, axis=-1, epsilon=1e-7):
    norm = ops.sqrt(ops.sum(ops.square(s), axis=axis, keepdims=True) + epsilon)
    return norm / (1 + norm) * s / norm


def _squash_numpy(s, axis=-1, epsilon=1e-7):
    squared = np.sum(np.square(s), axis=axis, keepdims=True)
    return squared / (1 + squared) * s / np.sqrt(squared + epsilon)


def _count(conv1=True, stride=2, maps=32, padding="valid", divide=lambda a, b: a // b):
    def size(n, k, s):
        return divide(n - k, s) + 1 if padding == "valid" else -(-n // s)

    def fn(height, width):
        h, w = (size(height, 9, 1), size(width, 9, 1)) if conv1 else (height, width)
        return size(h, 9, stride) * size(w, 9, stride) * maps
    return fn


def _routing(**switches):
    return lambda u_hat, iterations=3: routing(u_hat, iterations, **switches)


def _margin(**switches):
    return lambda t, x, m_plus=0.9, m_minus=0.1, lambda_=0.5: margin_loss(
        t, x, m_plus, m_minus, lambda_, **switches)


def _identity(x):
    return x


def _mask_variant(mask_of, order="capsules"):
    def fn(poses, labels):
        batch, n_caps, dims = poses.shape
        masked = poses * mask_of(labels, n_caps, dims)
        if order == "dims":
            masked = ops.transpose(masked, (0, 2, 1))
        return ops.reshape(masked, (batch, n_caps * dims)) if order else masked
    return fn


def _best(key="val_loss", pick=np.argmin, offset=1):
    return lambda history: int(pick(history[key])) + offset


def _z(**switches):
    return lambda a1, n1, a2, n2: two_proportion_z_test(a1, n1, a2, n2, **switches)


def _nan_sqrt(x):
    with np.errstate(invalid="ignore"):
        return np.sqrt(x)


def _tweak(kind):
    def fn(poses, label, dim, steps):
        copies = []
        current = poses.copy()
        for step in steps:
            out = poses.copy()
            if kind == "every capsule":
                out[:, dim] += step
            elif kind == "swapped":
                out[dim, label] += step
            elif kind == "set":
                out[label, dim] = step
            elif kind == "in place":
                poses[label, dim] += step
                out = poses.copy()
            elif kind == "accumulate":
                current[label, dim] += step
                out = current.copy()
            elif kind == "same array":
                current[label, dim] = poses[label, dim] + step
                out = current
            copies.append(out)
        return np.stack(copies) if kind != "flat" else np.concatenate(copies)
    return fn


def _confusion_from_present(y_true, y_pred, n_classes=10):
    present = np.unique(np.concatenate([y_true, y_pred]))
    cm = np.zeros((len(present), len(present)), dtype=int)
    np.add.at(cm, (np.searchsorted(present, y_true), np.searchsorted(present, y_pred)), 1)
    return cm


MISTAKES = [  # (check, wrong answer, phrase its message must contain)
    ("shift_image", lambda im, dy, dx: np.roll(im, (dy, dx), axis=(0, 1)), "np.roll"),
    ("shift_image", _swapped_args(shift_image), "swaps dy and dx"),
    ("shift_image", lambda im, dy, dx: shift_image(im, -dy, -dx), "direction reversed"),
    ("shift_image", _in_place_shift, "modifies the input image in place"),
    ("shift_image", lambda im, dy, dx: shift_image(im, dy, dx).astype(np.float64),
     "keep the image's dtype"),
    ("shift_image", lambda im, dy, dx: np.pad(im, 1), "it must keep the image's shape"),
    ("shift_image", lambda im, dy, dx: im if dy == dx == 0 else shift_image(im, dy, dx),
     "returned the input image itself"),

    ("stratified_split", lambda y, k, seed: (np.arange(len(y)), stratified_split(y, k, seed)[1]),
     "train and val overlap"),
    ("stratified_split", lambda y, k, seed: (
        stratified_split(y, k, seed)[0],
        np.concatenate([np.repeat(np.flatnonzero(y == c)[:1], k) for c in np.unique(y)])),
     "an index appears twice"),
    ("stratified_split", lambda y, k, seed: (
        stratified_split(y, k, seed)[0][:-1], stratified_split(y, k, seed)[1]),
     "in neither set"),
    ("stratified_split", lambda y, k, seed: (
        np.argsort(y, kind="stable")[k * len(np.unique(y)):],
        np.argsort(y, kind="stable")[:k * len(np.unique(y))]),
     "validation is not stratified: class 0 has 4"),
    ("stratified_split", lambda y, k, seed: (
        np.arange(k, len(y)), np.arange(k)), "wrong size"),
    ("stratified_split", _masks_split, "boolean masks instead of indices"),
    ("stratified_split", _unseeded_split, "not reproducible"),
    ("stratified_split", lambda y, k, seed: stratified_split(y, k, 0), "ignores its seed"),

    ("squash", _squash_no_epsilon, "returns NaN for the zero vector"),
    ("squash", _squash_epsilon_outside, "put epsilon inside the square root"),
    ("squash", _squash_where, "NaN or inf gradient"),
    ("squash", lambda s, axis=-1, epsilon=1e-7: squash(s, axis), "ignores the `epsilon`"),
    ("squash", lambda s, axis=-1, epsilon=1e-7: squash(s), "norm over the wrong axis"),
    ("squash", lambda s, axis=-1, epsilon=1e-7: squash(s, axis=None),
     "norm over the wrong axis"),
    ("squash", _squash_no_square, "misses the squares"),
    ("squash", lambda s, axis=-1, epsilon=1e-7: ops.sum(ops.square(s), axis, True) / (
        1 + ops.sum(ops.square(s), axis, True)) * s, "does not normalise the direction"),
    ("squash", lambda s, axis=-1, epsilon=1e-7: ops.sum(squash(s, axis), axis=axis),
     "it must keep the input's shape"),
    ("squash", lambda s, axis=-1, epsilon=1e-7: np.asarray(squash(s, axis), np.float64),
     "keep the input's dtype float32"),
    ("squash", _squash_numpy, "write it with keras.ops"),

    ("count_primary_capsules", _count(stride=1), "forgets the stride 2"),
    ("count_primary_capsules", _count(conv1=False), "forgets conv1"),
    ("count_primary_capsules", _count(maps=1), "counts positions only"),
    ("count_primary_capsules", _count(maps=256), "counts 256 channels"),
    ("count_primary_capsules", _count(padding="same"), "uses 'same' padding"),
    ("count_primary_capsules", lambda h, w: float(count_primary_capsules(h, w)),
     "returns a float"),
    ("count_primary_capsules", _count(divide=lambda a, b: a / b), "true division"),

    ("prediction_vectors", lambda W, u: ops.einsum("ijdk,bid->bijk", W, u), "W transposed"),
    ("prediction_vectors", lambda W, u: ops.einsum("ijkd,bid->bjik", W, u),
     "output axes in the wrong order"),
    ("prediction_vectors", lambda W, u: ops.einsum("ijkd,bid->bjk", W, u),
     "sums over the children"),
    ("prediction_vectors", lambda W, u: ops.einsum("jkd,bid->bijk", W[0], u),
     "same W for every child"),
    ("prediction_vectors", lambda W, u: ops.einsum("ijkd,bid->bij", W, u),
     "expected (batch, n_in, n_caps, dims)"),

    ("routing", _routing(axis=1), "softmax over the children"),
    ("routing", _routing(accumulate=False), "does not accumulate the logits"),
    ("routing", _routing(squash_s=False), "never squashes s"),
    ("routing", _routing(return_s=True), "returns s (the weighted sum) instead of v"),
    ("routing", _routing(extra_update=True), "returns c from one round too many"),
    ("routing", _routing(rounds=lambda it: it + 1), "runs one round too many"),
    ("routing", _routing(rounds=lambda it: max(it - 1, 1)), "runs one round too few"),
    ("routing", _routing(couple=ops.sigmoid), "do not sum to 1 over the parents"),
    ("routing", lambda u_hat, iterations=3: routing(u_hat, iterations)[::-1],
     "returns (c, v), the pair in the wrong order: return (v, c)"),
    ("routing", lambda u_hat, iterations=3: (ops.expand_dims(routing(u_hat, iterations)[0], 1),
                                             routing(u_hat, iterations)[1]),
     "expected v of shape (batch, n_out, d)"),
    ("routing", lambda u_hat, iterations=1: routing(u_hat, iterations),
     "the default must be iterations=3"),

    ("margin_loss", _margin(lambda_present=True), "applies lambda_ to the present class"),
    ("margin_loss", lambda t, x, m_plus=0.9, m_minus=0.1, lambda_=0.5: lambda_ * margin_loss(
        t, x, m_plus, m_minus, 1.0), "applies lambda_ to both terms"),
    ("margin_loss", _margin(reduce=ops.mean), "averages over the classes"),
    ("margin_loss", lambda t, x, m_plus=0.9, m_minus=0.1, lambda_=0.5: ops.mean(margin_loss(
        t, x, m_plus, m_minus, lambda_)), "returns the batch mean"),
    ("margin_loss", _margin(square=_identity), "forgets the square"),
    ("margin_loss", _margin(clip=_identity), "forgets max(0,"),
    ("margin_loss", _margin(clip=_identity, square=_identity), "negative loss"),
    ("margin_loss", lambda t, x, m_plus=0.9, m_minus=0.1, lambda_=0.5: margin_loss(
        t, x, m_minus, m_plus, lambda_), "swaps m_plus and m_minus"),
    ("margin_loss", lambda t, x, m_plus=0.9, m_minus=0.1, lambda_=0.5: margin_loss(
        1 - t, x, m_plus, m_minus, lambda_), "inverts the targets"),
    ("margin_loss", lambda t, x, m_plus=0.9, m_minus=0.1, lambda_=0.5: margin_loss(t, x),
     "ignores m_plus, m_minus or lambda_"),

    ("capsule_lengths", lambda p: ops.sqrt(ops.sum(ops.square(p), axis=1) + 1e-7),
     "norm over the wrong axis"),
    ("capsule_lengths", lambda p: ops.sum(ops.square(p), axis=-1), "squared length"),
    ("capsule_lengths", lambda p: ops.softmax(capsule_lengths(p), axis=-1),
     "applies a softmax to the lengths"),
    ("capsule_lengths", lambda p: ops.sqrt(ops.sum(ops.square(p), axis=-1)),
     "NaN gradient at a zero capsule"),
    ("capsule_lengths", lambda p: ops.norm(p, axis=-1), "NaN gradient at a zero capsule"),
    ("capsule_lengths", lambda p: ops.expand_dims(capsule_lengths(p), -1),
     "expected (batch, n_caps)"),
    ("capsule_lengths", lambda p: np.sqrt(np.sum(np.square(p), axis=-1) + 1e-7),
     "write it with keras.ops"),

    ("mask_poses", _mask_variant(lambda y, n, d: ops.one_hot(y, n)[:, :, None], order=None),
     "does not flatten"),
    ("mask_poses", _mask_variant(lambda y, n, d: 1 - ops.one_hot(y, n)[:, :, None]),
     "inverts the mask"),
    ("mask_poses", _mask_variant(lambda y, n, d: ops.one_hot(y, n)[:, :, None], order="dims"),
     "flattens in the wrong order"),
    ("mask_poses", _mask_variant(lambda y, n, d: ops.one_hot(y, d)[:, None, :]),
     "keeps pose dimension `label` of every capsule"),
    ("mask_poses", lambda p, y: ops.reshape(mask_poses(p, y), (-1,)),
     "expected (batch, n_caps * dims)"),

    ("reconstruction_loss", lambda a, b: reconstruction_loss(a, b) / np.prod(a.shape[1:]),
     "averages over the pixels"),
    ("reconstruction_loss", lambda a, b: ops.mean(reconstruction_loss(a, b)),
     "returns the batch mean"),
    ("reconstruction_loss", lambda a, b: ops.sum(ops.abs(ops.reshape(a - b, (a.shape[0], -1))),
                                                 axis=-1), "forgets the square"),
    ("reconstruction_loss", lambda a, b: ops.sqrt(reconstruction_loss(a, b)),
     "square root of the sum"),
    ("reconstruction_loss", lambda a, b: ops.sum(ops.square(a - b)),
     "sums over the whole batch"),

    ("best_epoch", _best(offset=0), "0-based"),
    ("best_epoch", _best(pick=np.argmax), "highest validation loss"),
    ("best_epoch", _best("val_lengths_accuracy", np.argmax),
     "chose the epoch with the best validation accuracy; the course selects on "
     "validation loss"),
    ("best_epoch", _best("loss"), "selects on the training loss"),
    ("best_epoch", _best("val_lengths_loss"), "selects on 'val_lengths_loss'"),
    ("best_epoch", lambda h: min(h["val_loss"]), "loss value instead of the epoch"),
    ("best_epoch", lambda h: len(h["val_loss"]), "always returns the last epoch"),
    ("best_epoch", lambda h: len(h["val_loss"]) - int(np.argmin(h["val_loss"][::-1])),
     "last of tied epochs"),
    ("best_epoch", lambda h: float(best_epoch(h)), "returns a float"),

    ("two_proportion_z_test", _z(tail=lambda z: math.erfc(abs(z) / math.sqrt(2)) / 2),
     "one-sided p-value"),
    ("two_proportion_z_test", _z(variance=lambda a1, n1, a2, n2, p: a1 * (1 - a1) / n1
                                 + a2 * (1 - a2) / n2), "unpooled standard error"),
    ("two_proportion_z_test", lambda a1, n1, a2, n2: two_proportion_z_test(
        a1 / 100, n1, a2 / 100, n2), "percentages"),
    ("two_proportion_z_test", lambda a1, n1, a2, n2: two_proportion_z_test(
        a1 * 100, n1, a2 * 100, n2, sqrt=_nan_sqrt), "percentages"),
    ("two_proportion_z_test", _z(sqrt=_identity), "forgets the square root"),
    ("two_proportion_z_test", _z(variance=lambda a1, n1, a2, n2, p: p * (1 - p) / n1),
     "variance of one sample only"),
    ("two_proportion_z_test", _z(tail=lambda z: 1 - math.erfc(abs(z) / math.sqrt(2))),
     "wrong tail"),
    ("two_proportion_z_test", _z(tail=lambda z: math.erfc(z / math.sqrt(2))), "wrong tail"),
    ("two_proportion_z_test", lambda a1, n1, a2, n2: tuple(
        abs(x) for x in two_proportion_z_test(a1, n1, a2, n2)), "returns |z|"),

    ("tweak_pose", _tweak("every capsule"), "every capsule"),
    ("tweak_pose", _tweak("swapped"), "swaps label and dim"),
    ("tweak_pose", _tweak("set"), "instead of adding"),
    ("tweak_pose", _tweak("in place"), "modifies the input poses in place"),
    ("tweak_pose", _tweak("accumulate"), "lets the steps accumulate"),
    ("tweak_pose", _tweak("same array"), "same array for every step"),
    ("tweak_pose", _tweak("flat"), "expected (len(steps), n_caps, dims)"),

    ("confusion_matrix", lambda t, p, n_classes=10: confusion_matrix(p, t, n_classes),
     "is transposed"),
    ("confusion_matrix", _confusion_from_present, "classes are missing"),
    ("confusion_matrix", lambda t, p, n_classes=10: confusion_matrix(t, p, n_classes) / np.maximum(
        confusion_matrix(t, p, n_classes).sum(axis=1, keepdims=True), 1),
     "normalises the rows to shares"),
    ("confusion_matrix", lambda t, p, n_classes=10: np.diag(np.bincount(
        t[t == p], minlength=n_classes)), "counts only the diagonal"),
    ("confusion_matrix", lambda t, p, n_classes=10: confusion_matrix(t, p, n_classes) * 1.0,
     "count with integers"),

    ("centre_of_ink", _centre_variant("swapped"), "returns (column, row)"),
    ("centre_of_ink", _centre_variant("unweighted"), "weights every pixel with ink the same"),
    ("centre_of_ink", _centre_variant("darkest"), "returns the darkest pixel"),
    ("centre_of_ink", _centre_variant("from 1"), "counts rows and columns from 1"),
    ("centre_of_ink", _centre_variant("no division"), "forgets to divide by the total ink"),
    ("centre_of_ink", _centre_variant("per pixel"), "divides by the number of pixels"),
    ("centre_of_ink", _centre_variant("from the middle"), "measures from the middle"),
    ("centre_of_ink", _centre_variant("zero when empty"), "image without ink: it has no centre"),
    ("centre_of_ink", _centre_variant("channel kept"), "have a channel axis"),
    ("centre_of_ink", _centre_variant("in place"), "changes the images it is given"),
    ("centre_of_ink", _centre_variant("squeezed"), "np.squeeze also removes"),

    ("accuracy_interval", lambda a, n, z=1.96: (a - z * a * (1 - a) / n, a + z * a * (1 - a) / n),
     "forgets the square root"),
    ("accuracy_interval", lambda a, n, z=1.96: accuracy_interval(a, n, 1.0), "forgets z"),
    ("accuracy_interval", lambda a, n, z=1.96: (a - z * math.sqrt(a * (1 - a)) / n,
                                                a + z * math.sqrt(a * (1 - a)) / n),
     "divides by n outside the square root"),
    ("accuracy_interval", lambda a, n, z=1.96: (a - z * math.sqrt(a * (1 - a) / n),
                                                a + z * math.sqrt(a * (1 - a) / n)),
     "does not clip"),
    ("accuracy_interval", lambda a, n, z=1.96: accuracy_interval(a, 1 / n, z),
     "number of correct images"),
    ("accuracy_interval", lambda a, n, z=1.96: accuracy_interval(a, n), "ignores the z argument"),
    ("accuracy_interval", lambda a, n, z=1.96: [accuracy_interval(a, n, z)], "pair (low, high)"),

    ("coupling_entropy", lambda c: coupling_entropy(c) / np.log(2), "log base 2"),
    ("coupling_entropy", lambda c: -coupling_entropy(c), "wrong sign"),
    ("coupling_entropy", lambda c: coupling_entropy(c) / c.shape[-1], "mean over the parents"),
    ("coupling_entropy", lambda c: -np.sum(c * np.log(np.maximum(c, 1e-12)), axis=1),
     "wrong axis"),
    ("coupling_entropy", lambda c: -np.sum(c * np.log(c), axis=-1), "0 * log(0)"),
    ("coupling_entropy", lambda c: -np.sum(c * np.log(np.maximum(c, 1e-12)), axis=-1,
                                           keepdims=True), "one entropy per child"),
]


@pytest.mark.parametrize(
    "name, wrong, phrase", MISTAKES,
    ids=[f"{name}-{phrase[:40]}" for name, _, phrase in MISTAKES])
def test_mistake_is_named(name, wrong, phrase, capsys):
    with pytest.raises(checks.CheckFailed) as info:
        check(name)(wrong)
    assert phrase in str(info.value)
    assert "All" not in capsys.readouterr().out


# -- Mistakes written out as a student would write them ------------------------

def routing_resets_b(u_hat, iterations=3):
    for r in range(iterations):
        b = ops.zeros(ops.shape(u_hat)[:3])  # the mistake: b = 0 in every round
        c = ops.softmax(b, axis=2)
        v = squash(ops.einsum("bij,bijk->bjk", c, u_hat))
        b = b + ops.einsum("bijk,bjk->bij", u_hat, v)
    return v, c


def routing_agrees_with_s(u_hat, iterations=3):
    b = ops.zeros(ops.shape(u_hat)[:3])
    for r in range(iterations):
        c = ops.softmax(b, axis=2)
        s = ops.einsum("bij,bijk->bjk", c, u_hat)
        v = squash(s)
        if r < iterations - 1:
            b = b + ops.einsum("bijk,bjk->bij", u_hat, s)  # the mistake: s, not v
    return v, c


def routing_agrees_with_u_hat_summed(u_hat, iterations=3):
    b = ops.zeros(ops.shape(u_hat)[:3])
    for r in range(iterations):
        c = ops.softmax(b, axis=2)
        v = squash(ops.einsum("bij,bijk->bjk", c, u_hat))
        if r < iterations - 1:
            total = ops.sum(u_hat, axis=1)  # the mistake: u_hat summed over the children
            b = b + ops.expand_dims(ops.sum(total * v, axis=-1), 1)
    return v, c


def routing_agrees_with_previous_v(u_hat, iterations=3):
    b = ops.zeros(ops.shape(u_hat)[:3])
    v = ops.zeros_like(u_hat[:, 0])
    for r in range(iterations):
        c = ops.softmax(b, axis=2)
        b = b + ops.einsum("bijk,bjk->bij", u_hat, v)  # the mistake: the last round's v
        v = squash(ops.einsum("bij,bijk->bjk", c, u_hat))
    return v, c


def routing_returns_c_v(u_hat, iterations=3):
    b = ops.zeros(ops.shape(u_hat)[:3])
    for r in range(iterations):
        c = ops.softmax(b, axis=2)
        v = squash(ops.einsum("bij,bijk->bjk", c, u_hat))
        if r < iterations - 1:
            b = b + ops.einsum("bijk,bjk->bij", u_hat, v)
    return c, v  # the mistake: (v, c) expected


def routing_numpy(u_hat, iterations=3):
    u_hat = np.asarray(u_hat)
    b = np.zeros(u_hat.shape[:3])
    for r in range(iterations):
        e = np.exp(b - b.max(axis=2, keepdims=True))
        c = e / e.sum(axis=2, keepdims=True)
        s = np.einsum("bij,bijk->bjk", c, u_hat)
        squared = np.sum(s ** 2, axis=-1, keepdims=True)
        v = squared / (1 + squared) * s / np.sqrt(squared + 1e-7)
        if r < iterations - 1:
            b = b + np.einsum("bijk,bjk->bij", u_hat, v)
    return v, c


def squash_without_keepdims(s, axis=-1, epsilon=1e-7):
    squared = ops.sum(ops.square(s), axis=axis)  # the mistake: no keepdims=True
    return squared / (1 + squared) * s / ops.sqrt(squared + epsilon)


def squash_divides_by_squared_norm(s, axis=-1, epsilon=1e-7):
    squared = ops.sum(ops.square(s), axis=axis, keepdims=True)
    return squared / (1 + squared) * s / (squared + epsilon)  # the mistake: not the norm


def squash_stops_the_gradient(s, axis=-1, epsilon=1e-7):
    squared = ops.stop_gradient(ops.sum(ops.square(s), axis=axis, keepdims=True))  # mistake
    return squared / (1 + squared) * s / ops.sqrt(squared + epsilon)


def split_returns_val_train(labels, val_per_class, seed):
    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.choice(np.flatnonzero(labels == k), val_per_class, replace=False)
                          for k in np.unique(labels)])
    train = np.setdiff1d(np.arange(len(labels)), val)
    return val, train  # the mistake: (train_idx, val_idx) expected


def z_test_returns_p_z(acc_1, n_1, acc_2, n_2):
    p = (acc_1 * n_1 + acc_2 * n_2) / (n_1 + n_2)
    z = (acc_1 - acc_2) / math.sqrt(p * (1 - p) * (1 / n_1 + 1 / n_2))
    return math.erfc(abs(z) / math.sqrt(2)), z  # the mistake: (z, p) expected


def interval_returns_high_low(accuracy, n, z=1.96):
    half = z * math.sqrt(accuracy * (1 - accuracy) / n)
    return min(1.0, accuracy + half), max(0.0, accuracy - half)  # the mistake


def prediction_vectors_numpy(W, u):
    return np.einsum("ijkd,bid->bijk", W, u)


def margin_loss_numpy(targets, lengths, m_plus=0.9, m_minus=0.1, lambda_=0.5):
    present = targets * np.maximum(0.0, m_plus - lengths) ** 2
    absent = lambda_ * (1 - targets) * np.maximum(0.0, lengths - m_minus) ** 2
    return np.sum(present + absent, axis=-1)


def reconstruction_loss_numpy(images, reconstructions):
    squared = np.square(images - reconstructions)
    return np.sum(squared.reshape(len(images), -1), axis=-1)


NUMPY_REFUSED = ("cannot be differentiated: write it with keras.ops (ops.sum, ops.square, "
                 "ops.sqrt, ops.einsum, ...) instead of NumPy: NumPy functions cut the "
                 "gradient, and the model is trained through this step")

WRITTEN_OUT = [  # (check, the student's function, what the student must read)
    ("routing", routing_resets_b, "your routing resets the logits b to zero inside the loop"),
    ("routing", routing_agrees_with_s, "your routing computes the agreement with s instead of v"),
    ("routing", routing_agrees_with_u_hat_summed,
     "your routing sums the agreement over the children (u_hat summed over i)"),
    ("routing", routing_agrees_with_previous_v, "updates b with the previous round's v"),
    ("routing", routing_returns_c_v,
     "your routing returns (c, v), the pair in the wrong order: return (v, c)"),
    ("routing", routing_numpy, "your routing " + NUMPY_REFUSED),
    ("squash", squash_without_keepdims,
     "your squash sums the squares without keepdims=True: on an input of shape (3, 8), "
     "|s|^2 gets shape (3,) instead of (3, 1)"),
    ("squash", squash_divides_by_squared_norm,
     "your squash divides s by its squared norm |s|^2 instead of its norm |s|"),
    ("squash", squash_stops_the_gradient,
     "your squash's gradient on random (3, 8) vectors differs from capslib's"),
    ("stratified_split", split_returns_val_train,
     "your stratified_split returns (val_idx, train_idx), the pair in the wrong order: "
     "return (train_idx, val_idx)"),
    ("two_proportion_z_test", z_test_returns_p_z,
     "your two_proportion_z_test returns (p, z), the pair in the wrong order: return (z, p)"),
    ("accuracy_interval", interval_returns_high_low,
     "your accuracy_interval returns (high, low), the pair in the wrong order: "
     "return (low, high)"),
    ("prediction_vectors", prediction_vectors_numpy, "your prediction_vectors " + NUMPY_REFUSED),
    ("margin_loss", margin_loss_numpy, "your margin_loss " + NUMPY_REFUSED),
    ("reconstruction_loss", reconstruction_loss_numpy,
     "your reconstruction_loss " + NUMPY_REFUSED),
    ("squash", _squash_numpy, "your squash " + NUMPY_REFUSED),
    ("capsule_lengths", lambda p: np.sqrt(np.sum(np.square(p), axis=-1) + 1e-7),
     "your capsule_lengths " + NUMPY_REFUSED),
]


@pytest.mark.parametrize("name, wrong, words", WRITTEN_OUT,
                         ids=[f"{n}-{f.__name__}" for n, f, _ in WRITTEN_OUT])
def test_written_out_mistake_is_named(name, wrong, words, capsys):
    with pytest.raises(checks.CheckFailed) as info:
        check(name)(wrong)
    assert str(info.value).startswith(words) if words.startswith("your") else (
        words in str(info.value))
    assert "All" not in capsys.readouterr().out


def test_mask_poses_and_data_exercises_accept_numpy(capsys):
    # mask_poses is not refused in NumPy: 05_decoder's own answer is NumPy and
    # the model masks with capslib's Mask layer.
    def mask_poses_numpy(poses, labels):
        batch, n_caps, dims = poses.shape
        keep = np.eye(n_caps, dtype=poses.dtype)[labels]
        return (poses * keep[:, :, None]).reshape(batch, n_caps * dims)

    checks.check_mask_poses(mask_poses_numpy)
    for name in ("shift_image", "stratified_split", "count_primary_capsules", "best_epoch",
                 "two_proportion_z_test", "tweak_pose", "confusion_matrix", "centre_of_ink",
                 "coupling_entropy", "accuracy_interval"):
        check(name)(CORRECT[name][0])  # written with NumPy or plain Python
    assert capsys.readouterr().out.count("checks passed.") == 11


# -- What a notebook shows -------------------------------------------------------

def _frames_in_checks(error):
    """The frames of capslib.checks' own modules (the package: one module per notebook)."""
    package = Path(checks.__file__).parent
    return [f.name for f in traceback.extract_tb(error.__traceback__)
            if Path(f.filename).parent == package]


def test_a_failed_check_renders_as_its_message_alone():
    with pytest.raises(checks.CheckFailed) as info:
        checks.check_routing(routing_resets_b)
    assert isinstance(info.value, AssertionError)  # nbgrader: an error, the cell scores 0
    lines = info.value._render_traceback_()  # what IPython shows instead of a traceback
    assert len(lines) == 1
    assert lines[0].endswith(f"CheckFailed\x1b[0m: {info.value}")
    assert "checks.py" not in lines[0]


def test_stub_traceback_shows_none_of_the_checks_code():
    def stub(s, axis=-1, epsilon=1e-7):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError) as info:
        checks.check_squash(stub)
    # Only the public entry point, which IPython and pytest hide (__tracebackhide__).
    assert _frames_in_checks(info.value) == ["wrapper"]
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "stub"
    shown = "".join(traceback.format_exception(info.value))
    assert "wrong axis" not in shown and "keepdims" not in shown


def test_student_errors_keep_their_own_traceback():
    def helper(u_hat):
        return ops.zeros((2, 3)) + ops.zeros((4, 5))  # a shape error of the student's

    def routing_with_a_bug(u_hat, iterations=3):
        return helper(u_hat), None

    with pytest.raises(Exception) as info:
        checks.check_routing(routing_with_a_bug)
    assert not isinstance(info.value, AssertionError)  # outside squash: not a named mistake
    names = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "routing_with_a_bug" in names and "helper" in names
    assert _frames_in_checks(info.value) == ["wrapper"]
    assert any("raised by your routing" in note for note in info.value.__notes__)


# -- Messages gathered for a translation catalog ----------------------------------------


def _marked_messages_and_strays(path):
    """The messages given to ``_`` in a checks module, and the prose f-strings not in one."""
    tree = ast.parse(path.read_text())
    marked, inside = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_":
            marked.append(node.args[0])
            inside |= {id(n) for n in ast.walk(node)}
        elif isinstance(node, ast.Raise) or isinstance(node, ast.FunctionDef) and (
                node.name == "_render_traceback_"):  # a bug of ours, the exception's name
            inside |= {id(n) for n in ast.walk(node)}
    strays = [ast.unparse(node) for node in ast.walk(tree)
              if isinstance(node, ast.JoinedStr) and id(node) not in inside
              and any(isinstance(v, ast.Constant) and " " in v.value.strip(" ")
                      for v in node.values)]
    return marked, strays


@pytest.mark.backend_free
def test_every_message_is_marked_for_a_translation_catalog():
    modules = sorted(Path(checks.__file__).parent.glob("*.py"))
    assert {m.stem for m in modules} >= {"_core", "nb01_data", "nb08_does_routing_help"}
    total = 0
    for module in modules:
        marked, strays = _marked_messages_and_strays(module)
        # A catalog is extracted from literal text: never an f-string or a variable.
        assert all(isinstance(m, ast.Constant) and isinstance(m.value, str) for m in marked), \
            module.name
        assert not strays, f"{module.name}: messages not marked with _(): {strays}"
        total += len(marked)
    assert total > 250
