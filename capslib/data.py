"""Fashion-MNIST loading, splitting and augmentation for the course.

Backend-neutral on purpose: only NumPy and Keras' backend-agnostic utilities
are used, so everything here works under TensorFlow and JAX alike.

* ``load_fashion_mnist`` finds the four original IDX ``.gz`` files (argument,
  ``$CAPSLIB_DATA_DIR``, the course's ``data/fashion-mnist`` (see
  ``course_root``), ``data/fashion-mnist`` in the working folder or its
  parent, Debian's ``/usr/share/datasets/fashion-mnist``, the course's download
  cache, the Keras cache; downloads the course's copy from its repository
  (``capslib.course``: Colab, a pip install) only as a last resort, and says in
  one line how to fix it when that fails), verifies each file's SHA-256, parses the
  IDX headers itself and returns float32 images in [0, 1] shaped
  (N, 28, 28, 1) with int64 labels. Results are cached per process and
  returned read-only so a caller cannot corrupt the cache.
* ``split_train_val`` makes a stratified, seeded validation split.
* ``augment_batch`` shifts images by up to ``max_shift`` px (zero padding,
  as in the CapsNet paper) and flips them horizontally, in NumPy.
* ``CapsuleDataset`` is a ``keras.utils.PyDataset`` yielding
  ``({"image", "label"}, {"lengths", "reconstruction"})`` batches, with
  shuffling and augmentation that are deterministic given seed, epoch and
  batch index (so worker processes agree with the main process).
"""

import functools
import gzip
import math
import os
import zlib
from pathlib import Path

import keras
import numpy as np

from capslib.course import file_sha256  # noqa: F401  (capslib.data.file_sha256, used by others)

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}

# Where the files come from when no copy is found: the course's repository
# (``capslib.course``, one URL for the install and every download).
DATA_FOLDER = "data/fashion-mnist"
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
# The folder above the capslib package: the course repository when capslib is
# imported from a checkout (an editable install), site-packages when installed.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]
# What the course folder holds (any one of them marks it).
_COURSE_MARKERS = ("data/fashion-mnist", "results", "notebooks")


def checkout_root():
    """The course repository capslib is imported from, or None when capslib is
    installed (in site-packages) rather than imported from a checkout."""
    if (PACKAGE_PARENT / "pyproject.toml").is_file() and (PACKAGE_PARENT / "capslib").is_dir():
        return PACKAGE_PARENT
    return None


def working_folders():
    """The working folder and its parent (notebooks run one folder below the course)."""
    try:
        cwd = Path.cwd()
    except FileNotFoundError:  # the working folder was deleted
        return []
    return [cwd] if cwd.parent == cwd else [cwd, cwd.parent]


def course_root():
    """The course folder: the working folder or its parent (a notebook runs in
    ``notebooks/``), whichever holds the course (its ``data/fashion-mnist``,
    ``results/`` or ``notebooks/``); else the checkout capslib is imported
    from (an editable install); else the working folder. Never site-packages:
    runs are written and results looked for here."""
    folders = working_folders()
    for folder in folders:
        if any((folder / marker).is_dir() for marker in _COURSE_MARKERS):
            return folder
    root = checkout_root()
    if root is not None:
        return root
    return folders[0] if folders else Path.cwd()


def _course_data_dir():
    """The course folder's ``data/fashion-mnist``; for an installed capslib (Colab, a
    pip install) without one there, the copy fetched from the course's repository."""
    local = course_root() / "data" / "fashion-mnist"
    if checkout_root() is None and not local.is_dir():
        from capslib import course
        return course.cached(DATA_FOLDER)
    return local


# The course's copy of the data, found when capslib is imported.
REPO_DATA_DIR = _course_data_dir()

_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049
_SIDE = 28
_FIX = (
    "Re-fetch the file (e.g. `apt-get download dataset-fashion-mnist` and "
    "`dpkg -x`), check it with `sha256sum -c SHA256SUMS`, or point "
    "$CAPSLIB_DATA_DIR at a directory holding the four original files."
)


# The model outputs a batch can give targets for (see CapsuleDataset).
TARGETS = ("lengths", "probabilities", "reconstruction")


class DataError(Exception):
    """A data file is missing, corrupted or not what we expect."""


def _keras_cache_dir():
    # Same rule as keras.utils.get_file: $KERAS_HOME, else ~/.keras.
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "datasets" / "fashion-mnist"


def _has_all_files(d):
    return all((d / name).is_file() for name in FILES)


def candidate_dirs():
    """Directories searched, in order, when no ``data_dir`` is given:
    ``$CAPSLIB_DATA_DIR``, the course's ``data/fashion-mnist`` (``REPO_DATA_DIR``),
    the same in the working folder, its parent and the checkout capslib is
    imported from, Debian's, the Keras cache."""
    dirs = []
    if os.environ.get("CAPSLIB_DATA_DIR"):
        dirs.append(Path(os.environ["CAPSLIB_DATA_DIR"]).expanduser())
    dirs.append(REPO_DATA_DIR)
    roots = working_folders() + ([checkout_root()] if checkout_root() else [])
    dirs += [root / "data" / "fashion-mnist" for root in roots]
    from capslib import course
    dirs += [SYSTEM_DATA_DIR, course.cached(DATA_FOLDER), _keras_cache_dir()]
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _not_found_fix():
    return (
        "Run from the course folder (or its notebooks/), set "
        "CAPSLIB_DATA_DIR=/path/to/fashion-mnist (a folder holding the four .gz "
        "files), or install them with `apt install dataset-fashion-mnist`."
    )


def _download():
    """Fetch the course's copy (the four files, SHA256SUMS, LICENSE) from its
    repository into the course's download cache; the last resort."""
    from capslib import course
    try:
        return course.fetch_folder(DATA_FOLDER)
    except course.DownloadError as e:
        searched = ", ".join(str(d) for d in candidate_dirs())
        # ``from None``: one line, not the traceback of the download.
        raise DataError(
            f"{e}. Fashion-MNIST was not found on this machine either (looked in {searched}). "
            f"{_not_found_fix()}") from None


def find_data_dir(data_dir=None):
    """Return the directory ``load_fashion_mnist`` would read from."""
    if data_dir is not None:
        # An explicit choice is honoured strictly: no silent fallback.
        d = Path(data_dir).expanduser()
        for name in FILES:
            if not (d / name).is_file():
                raise DataError(
                    f"{d / name}: expected the Fashion-MNIST file {name}, "
                    f"found nothing there. {_FIX}"
                )
        return d.resolve()
    chosen = os.environ.get("CAPSLIB_DATA_DIR")
    if chosen:  # set on purpose: a folder without the files is a mistake, not a fallback
        d = Path(chosen).expanduser()
        missing = [name for name in FILES if not (d / name).is_file()]
        if missing:
            raise DataError(
                f"CAPSLIB_DATA_DIR={chosen}: {d / missing[0]} not found"
                f"{f' (nor {len(missing) - 1} other file(s))' if len(missing) > 1 else ''}. "
                "Point it at a folder holding the four Fashion-MNIST .gz files, or unset it "
                "to use the course's copy.")
    for d in candidate_dirs():
        if _has_all_files(d):
            return d.resolve()
    return _download().resolve()


def _read_idx(path, magic, dims):
    """Decompress and parse one IDX file; return (count, payload bytes)."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: expected a valid gzip file, found one that fails to "
            f"decompress ({e}). {_FIX}"
        ) from e
    header_len = 4 * (2 + len(dims))
    if len(raw) < header_len:
        raise DataError(
            f"{path}: expected an IDX header of {header_len} bytes, found "
            f"only {len(raw)} bytes. {_FIX}"
        )
    header = np.frombuffer(raw, dtype=">u4", count=2 + len(dims))
    if header[0] != magic:
        raise DataError(
            f"{path}: expected IDX magic number {magic}, found "
            f"{int(header[0])}. {_FIX}"
        )
    if tuple(int(v) for v in header[2:]) != dims:
        raise DataError(
            f"{path}: expected item shape {dims}, found "
            f"{tuple(int(v) for v in header[2:])}. {_FIX}"
        )
    count = int(header[1])
    want = count * math.prod(dims)
    got = len(raw) - header_len
    if got != want:
        raise DataError(
            f"{path}: the header promises {count} items ({want} bytes), "
            f"found {got} bytes of data (truncated or padded file). {_FIX}"
        )
    return count, raw[header_len:]


def _load_split(d, prefix):
    img_path = d / f"{prefix}-images-idx3-ubyte.gz"
    lbl_path = d / f"{prefix}-labels-idx1-ubyte.gz"
    n_img, img = _read_idx(img_path, _IMAGE_MAGIC, (_SIDE, _SIDE))
    n_lbl, lbl = _read_idx(lbl_path, _LABEL_MAGIC, ())
    if n_img != n_lbl:
        raise DataError(
            f"{lbl_path}: expected {n_img} labels to match {img_path.name}, "
            f"found {n_lbl}. {_FIX}"
        )
    labels = np.frombuffer(lbl, dtype=np.uint8).astype(np.int64)
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DataError(
            f"{lbl_path}: expected labels in 0..{len(CLASS_NAMES) - 1}, found "
            f"{int(labels.max())}. {_FIX}"
        )
    x = np.frombuffer(img, dtype=np.uint8).reshape(n_img, _SIDE, _SIDE, 1)
    x = x.astype(np.float32) / np.float32(255.0)
    for a in (x, labels):
        a.flags.writeable = False  # shared by every caller via the cache
    return x, labels


@functools.lru_cache(maxsize=4)
def _load_cached(d, stamp, hashes):
    # ``stamp`` (sizes, mtimes) and ``hashes`` are only cache keys: a changed
    # file or expected hash means a fresh, fully checked load.
    del stamp
    expected = dict(hashes)
    for name, sha in expected.items():
        found = file_sha256(d / name)
        if found != sha:
            raise DataError(
                f"{d / name}: expected SHA-256 {sha}, found {found}. {_FIX}"
            )
    return _load_split(d, "train"), _load_split(d, "t10k")


def load_fashion_mnist(data_dir=None):
    """Return ``(x_train, y_train), (x_test, y_test)``.

    Images are read-only float32 arrays in [0, 1] of shape (N, 28, 28, 1);
    labels are read-only int64 arrays. Copy them (``x.copy()``) to modify.
    With ``data_dir`` only that directory is used; otherwise see
    ``candidate_dirs()``. Raises ``DataError`` on any problem with the files.
    """
    d = find_data_dir(data_dir)
    stamp = tuple(
        (s.st_size, s.st_mtime_ns) for s in ((d / n).stat() for n in FILES)
    )
    return _load_cached(d, stamp, tuple(FILES.items()))


def split_train_val(x, y, val_size=5000, seed=42):
    """Stratified split: ``(x_tr, y_tr), (x_val, y_val)``."""
    from sklearn.model_selection import train_test_split  # lazy: slow import

    n, n_classes = len(y), len(np.unique(y))
    if len(x) != n:
        raise ValueError(f"x and y differ in length: {len(x)} vs {n}.")
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)):
        raise ValueError(f"val_size must be a whole number of images, got {val_size!r}.")
    if not n_classes <= val_size <= n - n_classes:
        raise ValueError(
            f"val_size={val_size}: a stratified split of {n:,} images of {n_classes} "
            f"classes needs val_size from {n_classes} to {n - n_classes:,}."
        )
    x_tr, x_val, y_tr, y_val = train_test_split(
        x, y, test_size=val_size, random_state=seed, stratify=y
    )
    return (x_tr, y_tr), (x_val, y_val)


def check_finite(images, what="images"):
    """Raise a ValueError counting the NaN and infinite pixels, if any."""
    bad = ~np.isfinite(images)
    if bad.any():
        per_image = bad.reshape(len(images), -1).any(axis=1)
        first = int(np.argmax(per_image))
        raise ValueError(
            f"{what} hold {int(bad.sum()):,} NaN or infinite pixel values in "
            f"{int(per_image.sum()):,} of {len(images):,} images (the first at index "
            f"{first}); fix or drop those images."
        )


# Float rounding tolerated outside [0, 1].
_RANGE_SLACK = 1e-4


def _shape_fix(shape, image_shape, min_side=None, min_side_why=""):
    """How to turn images of ``shape`` into ``image_shape`` ones (a clause), or
    None when they fit. Unknown dimensions (None) fit anything."""
    h, w, c = image_shape
    shape = tuple(shape)
    if len(shape) == 4 and all(a is None or a == b for a, b in zip(shape[1:], image_shape)):
        return None
    if shape == (h, w) and c == 1:
        return "one image without batch and channel axes: use x[None, ..., None]"
    if len(shape) == 3 and shape[1:] == (h, w) and c == 1:
        return "add the channel axis with x[..., None]"
    if shape == image_shape:
        return "one image without a batch axis: use x[None]"
    if len(shape) == 4 and shape[1:3] == (h, w) and shape[3] in (3, 4) and c == 1:
        kind = "RGB" if shape[3] == 3 else "RGBA"
        return (f"these are {kind} images and the model expects one grey channel: convert "
                "them with x[..., :3].mean(axis=-1, keepdims=True)")
    if len(shape) == 4 and shape[3] == c and None not in shape[1:3]:
        fix = (f"images of {shape[1]}x{shape[2]} pixels; the model takes {h}x{w} only: "
               "pad or resize them")
        if min_side and min(shape[1:3]) < min_side:
            fix += (f" (images under {min_side}x{min_side} are too small for any CapsNet "
                    f"of these layers: {min_side_why})")
        return fix
    if len(shape) == 4 and shape[3] is not None:
        return f"{shape[3]} channels; the model expects {c}"
    return f"expected a batch of {h}x{w} images with {c} channel{'s' if c > 1 else ''}"


def _values_fix(images):
    """What is wrong with the dtype or the values of ``images`` (NumPy), or None."""
    # bfloat16 (mixed precision) is not a NumPy floating type: go by its name.
    if not (np.issubdtype(images.dtype, np.floating) or "float" in str(images.dtype)):
        fix = "convert with x.astype('float32') / 255" if images.dtype == np.uint8 else (
            "convert them to float32 pixels scaled to [0, 1]")
        return f"got dtype {images.dtype} and the model takes float images scaled to [0, 1]: {fix}"
    if images.size == 0:
        return None
    lo, hi = float(np.min(images)), float(np.max(images))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        try:
            check_finite(images)
        except ValueError as e:  # says how many, and where
            return str(e).rstrip(".")
    if lo >= -_RANGE_SLACK and hi <= 1 + _RANGE_SLACK:
        return None
    if lo >= -_RANGE_SLACK and hi <= 255 + _RANGE_SLACK and hi > 1.5:
        fix = "divide by 255 (x / 255)"
    elif lo < -_RANGE_SLACK and hi <= 1 + _RANGE_SLACK and lo >= -1 - _RANGE_SLACK:
        fix = "undo the normalisation, the model takes pixel / 255 (for [-1, 1]: (x + 1) / 2)"
    elif lo >= -0.5 and hi <= 1.5:
        fix = "clip them with np.clip(x, 0, 1)"
    else:
        fix = ("rescale them to pixel / 255 (standardized or other scalings are not what "
               "it was trained on)")
    return f"images must be scaled to [0, 1], got values from {lo:.4g} to {hi:.4g}: {fix}"


def check_images(images, image_shape=(_SIDE, _SIDE, 1), who="images", min_side=None,
                 min_side_why=""):
    """Raise a one-line ValueError with the fix unless ``images`` is a batch
    (N, *image_shape) of finite float pixels in [0, 1].

    ``images``: a NumPy array, or anything with a ``shape`` (a symbolic
    tensor: then only its known dimensions are checked). ``who`` starts the
    message; ``min_side`` (and ``min_side_why``) name the smallest image the
    model's layers take.
    """
    try:
        shape = tuple(images.shape)
    except ValueError:  # TensorFlow: a shape of unknown rank, nothing to check
        shape = None
    if shape is not None:
        fix = _shape_fix(shape, tuple(image_shape), min_side, min_side_why)
        if fix:
            raise ValueError(
                f"{who} expects images of shape (batch, {', '.join(map(str, image_shape))}), "
                f"got shape {shape}: {fix}.")
    if isinstance(images, np.ndarray):
        problem = _values_fix(images)
    else:  # a symbolic tensor: its dtype only
        dtype = keras.backend.standardize_dtype(images.dtype)
        problem = None if "float" in dtype else _values_fix(np.zeros(0, dtype))
    if problem:
        raise ValueError(f"{who}: {problem}.")


def _check_max_shift(max_shift, h, w):
    if (
        isinstance(max_shift, bool)
        or not isinstance(max_shift, (int, float, np.integer, np.floating))
        or not float(max_shift).is_integer()
        or not 0 <= max_shift < min(h, w)
    ):
        raise ValueError(
            f"max_shift={max_shift!r}: must be a whole number of pixels from 0 to "
            f"{min(h, w) - 1} (a shift of {min(h, w)} or more leaves a blank "
            f"{h}x{w} image)."
        )


def augment_batch(images, rng, max_shift=2, flip=True):
    """Randomly shift (zero-padded) and horizontally flip a batch.

    ``images`` is (B, H, W[, C]); ``rng`` a ``np.random.Generator`` (or a
    seed). Each image moves by its own integer offset in
    [-max_shift, max_shift] along each axis and, with ``flip``, is mirrored
    with probability 0.5. Returns a new array; the input is left unchanged.
    """
    rng = np.random.default_rng(rng)
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(
            f"images must have shape (B, H, W) or (B, H, W, C), got {images.shape}."
        )
    b, h, w = images.shape[:3]
    _check_max_shift(max_shift, h, w)
    if np.issubdtype(images.dtype, np.floating):
        check_finite(images)
    s = int(max_shift)
    dy = rng.integers(-s, s + 1, size=b)
    dx = rng.integers(-s, s + 1, size=b)
    pad = [(0, 0), (s, s), (s, s)] + [(0, 0)] * (images.ndim - 3)
    padded = np.pad(images, pad)
    # out[i, r, c] = images[i, r - dy, c - dx]: content moves by (dy, dx).
    rows = (s - dy)[:, None] + np.arange(h)[None, :]
    cols = (s - dx)[:, None] + np.arange(w)[None, :]
    out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mirror = rng.random(b) < 0.5
        out[mirror] = out[mirror, :, ::-1]
    return out


def shift_images(images, dy, dx):
    """Move the content of every image down by ``dy`` and right by ``dx`` pixels.

    ``images``: (N, H, W[, C]). Zero fill where nothing moved in, as in
    ``augment_batch``; shifts as large as the image leave it blank. A new array.
    """
    images = np.asarray(images)
    h, w = images.shape[1:3]
    out = np.zeros_like(images)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def rotate_images(images, degrees):
    """Rotate every image by ``degrees`` (counter-clockwise) about its centre.

    ``images``: (N, H, W[, C]); bilinear interpolation, zero fill, same shape.
    """
    from scipy import ndimage  # lazy: only the transformed test sets need it

    images = np.asarray(images)
    rotated = ndimage.rotate(images, degrees, axes=(2, 1), reshape=False, order=1,
                             mode="constant", cval=0.0)
    return np.clip(rotated, 0.0, 1.0).astype(images.dtype)


def scale_images(images, factor):
    """Zoom every image by ``factor`` about its centre (< 1 shrinks it).

    ``images``: (N, H, W[, C]); bilinear interpolation, zero fill, same shape.
    """
    from scipy import ndimage

    images = np.asarray(images)
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}.")
    # Output pixel o samples the input at centre + (o - centre) / factor.
    matrix = np.ones(images.ndim)
    matrix[1:3] = 1.0 / factor
    centre = np.zeros(images.ndim)
    centre[1:3] = (np.asarray(images.shape[1:3]) - 1) / 2.0
    scaled = ndimage.affine_transform(images, matrix, offset=centre - matrix * centre,
                                      order=1, mode="constant", cval=0.0)
    return np.clip(scaled, 0.0, 1.0).astype(images.dtype)


# The transformations of the test sets no model trains on (notebook 08).
TRANSFORMS = ("none", "shift", "rotate", "scale")


def transform_images(images, kind, amount=0, seed=0):
    """A transformed copy of ``images`` (N, H, W[, C]), seeded per image:

    - ``"shift"``: each image moves ``amount`` px in one of the 8 compass
      directions (so its larger offset is ``amount``; training shifts reach 2);
    - ``"rotate"``: each image turns by ``amount`` degrees, clockwise or not;
    - ``"scale"``: every image is zoomed by ``amount`` about its centre;
    - ``"none"``: a copy.
    """
    images = np.asarray(images)
    if kind not in TRANSFORMS:
        raise ValueError(f"kind must be one of {', '.join(TRANSFORMS)}, got {kind!r}.")
    rng = np.random.default_rng(seed)
    if kind == "none":
        return images.copy()
    if kind == "scale":
        return scale_images(images, amount)
    if kind == "rotate":
        signs = rng.choice([-1, 1], size=len(images))
        out = np.empty_like(images)
        for sign in (-1, 1):
            if np.any(signs == sign):
                out[signs == sign] = rotate_images(images[signs == sign], sign * amount)
        return out
    amount = int(amount)
    directions = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    picks = rng.integers(len(directions), size=len(images))
    out = np.empty_like(images)
    for k, (dy, dx) in enumerate(directions):
        out[picks == k] = shift_images(images[picks == k], dy * amount, dx * amount)
    return out


def balanced_indices(labels, n):
    """The first ``n // n_classes`` indices of each class, in order (n at most).

    "In order" means by position in ``labels``, not by class: ``labels[result]``
    mixes the classes. For one image per class in class order (to title
    column ``k`` with class ``k``), use ``first_of_each_class``.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    picked = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in classes])
    return np.sort(picked)


def first_of_each_class(labels, n_classes=None):
    """The index of the first image of each class, in class order.

    ``labels[result[k]] == k`` for every class ``k`` in ``0 .. n_classes - 1``
    (``n_classes`` defaults to ``max(labels) + 1``). Raises ValueError if a
    class has no image.
    """
    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    missing = [k for k in range(n_classes) if not np.any(labels == k)]
    if missing:
        raise ValueError(f"no image of class {', '.join(map(str, missing))} in the labels.")
    return np.array([np.flatnonzero(labels == k)[0] for k in range(n_classes)])


class CapsuleDataset(keras.utils.PyDataset):
    """Batches shaped for the CapsNet model's named inputs and outputs.

    ``ds[i]`` is ``(x, y)`` with ``x = {"image": float32 (B, 28, 28, 1),
    "label": int32 (B,)}`` and ``y = {"lengths": float32 one-hot (B, 10),
    "reconstruction": the same (possibly augmented) images}`` (``targets``
    picks the keys of ``y``: ``("probabilities",)`` for the baseline CNN,
    ``("lengths",)`` for a CapsNet without decoder). The last batch
    may be smaller. The order is reshuffled in ``on_epoch_end`` (or by
    ``set_epoch``); both order and augmentation depend only on ``seed``, the
    epoch and the batch index. ``capslib.train`` calls ``set_epoch`` with the
    epoch ``fit`` is at, so a resumed run sees the batches an uninterrupted
    run would have seen. Extra keyword arguments (``workers``, ``use_multiprocessing``,
    ``max_queue_size``) go to ``keras.utils.PyDataset``. Note: ``fit()``
    also calls ``on_epoch_end`` once before the first epoch, and with
    ``workers > 1`` Keras' enqueuer can serve a batch drawn before the
    reshuffle; keep ``workers=1`` when exact reproducibility matters.
    """

    def __init__(
        self,
        images,
        labels,
        batch_size=100,
        shuffle=True,
        augment=False,
        max_shift=2,
        flip=True,
        seed=0,
        n_classes=10,
        targets=("lengths", "reconstruction"),
        **kwargs,
    ):
        super().__init__(**kwargs)
        unknown = set(targets) - set(TARGETS)
        if unknown or not targets:
            raise ValueError(
                f"targets must name some of {', '.join(TARGETS)}, got {tuple(targets)}."
            )
        self.targets = tuple(targets)
        images, labels = np.asarray(images), np.asarray(labels)
        # Shape first (a shape error says how to fix it), then dtype, range and NaNs.
        check_images(images, who="CapsuleDataset")
        if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
            raise ValueError(
                f"labels must be a 1-D integer array of class ids, got dtype "
                f"{labels.dtype} and shape {labels.shape} (pass class ids, "
                "not one-hot vectors)."
            )
        if len(images) != len(labels):
            raise ValueError(
                f"images and labels differ in length: {len(images)} vs "
                f"{len(labels)}."
            )
        if len(labels) == 0:
            raise ValueError("images and labels are empty.")
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(
                f"labels must lie in 0..{n_classes - 1}, found values from "
                f"{labels.min()} to {labels.max()}."
            )
        if augment:
            _check_max_shift(max_shift, _SIDE, _SIDE)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.images = images.astype(np.float32, copy=False)
        self.labels = labels.astype(np.int32, copy=False)
        self.batch_size = int(batch_size)
        self.shuffle, self.augment = bool(shuffle), bool(augment)
        self.max_shift, self.flip = int(max_shift), bool(flip)
        self.seed, self.n_classes = int(seed), int(n_classes)
        self.epoch = 0
        self._order = self._draw_order()

    def set_epoch(self, epoch):
        """Draw the order (and augmentation) of ``epoch``, whatever came before."""
        self.epoch = int(epoch)
        self._order = self._draw_order()

    def _draw_order(self):
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(
            len(self.labels)
        )

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        x, labels = self.images[idx], self.labels[idx]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = augment_batch(x, rng, self.max_shift, self.flip)
        onehot = np.eye(self.n_classes, dtype=np.float32)[labels]
        y = {"lengths": onehot, "probabilities": onehot, "reconstruction": x}
        return {"image": x, "label": labels}, {k: y[k] for k in self.targets}

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._draw_order()
