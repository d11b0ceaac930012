import gzip
import hashlib
import shutil
import urllib.error

import numpy as np
import pytest

from capslib import course, data
from capslib.data import (CapsuleDataset, DataError, balanced_indices, scale_images,
                          transform_images)

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(magic, dims, payload):
    header = np.array([magic, *dims], dtype=">u4").tobytes()
    return header + bytes(payload)


def images_idx(n, rows=28, cols=28, magic=2051, payload=None):
    if payload is None:
        payload = (np.arange(n * rows * cols) % 256).astype(np.uint8)
    return idx_bytes(magic, (n, rows, cols), payload)


def labels_idx(labels, magic=2049, count=None):
    labels = np.asarray(labels, dtype=np.uint8)
    n = len(labels) if count is None else count
    return idx_bytes(magic, (n,), labels)


def write_set(d, monkeypatch=None, **overrides):
    """Write a tiny valid set (3 train, 2 test); ``overrides`` maps a NAMES
    key to raw file bytes (already gzipped or not). With ``monkeypatch``
    the expected hashes are replaced so checks past the checksum run."""
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "train_images": gzip.compress(images_idx(3)),
        "train_labels": gzip.compress(labels_idx([0, 9, 4])),
        "test_images": gzip.compress(images_idx(2)),
        "test_labels": gzip.compress(labels_idx([1, 2])),
    }
    files.update(overrides)
    hashes = {}
    for key, content in files.items():
        (d / NAMES[key]).write_bytes(content)
        hashes[NAMES[key]] = hashlib.sha256(content).hexdigest()
    if monkeypatch is not None:
        monkeypatch.setattr(data, "FILES", hashes)
    return d


# -- the real data ----------------------------------------------------------


def test_real_data_shapes_dtypes_ranges():
    (x_tr, y_tr), (x_te, y_te) = data.load_fashion_mnist()
    assert x_tr.shape == (60000, 28, 28, 1) and x_te.shape == (10000, 28, 28, 1)
    assert x_tr.dtype == np.float32 and x_te.dtype == np.float32
    assert y_tr.dtype == np.int64 and y_te.dtype == np.int64
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    assert np.bincount(y_tr).tolist() == [6000] * 10
    assert np.bincount(y_te).tolist() == [1000] * 10
    assert len(data.CLASS_NAMES) == 10


def test_real_data_is_cached_and_read_only():
    first = data.load_fashion_mnist()
    (x_tr, y_tr), _ = data.load_fashion_mnist()
    assert x_tr is first[0][0]
    with pytest.raises(ValueError):
        x_tr[0, 0, 0, 0] = 5.0
    with pytest.raises(ValueError):
        y_tr[0] = 3


def test_files_match_sha256sums():
    sums = (data.REPO_DATA_DIR / "SHA256SUMS").read_text().split()
    assert dict(zip(sums[1::2], sums[0::2])) == data.FILES


# -- search order -------------------------------------------------------------


def test_env_var_is_honoured(tmp_path, monkeypatch):
    d = write_set(tmp_path / "env", monkeypatch)
    monkeypatch.setenv("CAPSLIB_DATA_DIR", str(d))
    assert data.find_data_dir() == d.resolve()
    (x_tr, y_tr), (x_te, y_te) = data.load_fashion_mnist()
    assert x_tr.shape == (3, 28, 28, 1) and y_te.tolist() == [1, 2]


def test_incomplete_env_dir_is_refused_not_passed_over(tmp_path, monkeypatch):
    # Before: the course's copy was used silently, whatever CAPSLIB_DATA_DIR said.
    d = write_set(tmp_path / "env")
    (d / NAMES["test_labels"]).unlink()
    monkeypatch.setenv("CAPSLIB_DATA_DIR", str(d))
    with pytest.raises(DataError, match=f"CAPSLIB_DATA_DIR={d}: .*{NAMES['test_labels']} "
                                        "not found.*unset it"):
        data.find_data_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CAPSLIB_DATA_DIR", str(empty))
    with pytest.raises(DataError, match=r"not found \(nor 3 other file\(s\)\)"):
        data.load_fashion_mnist()
    monkeypatch.setenv("CAPSLIB_DATA_DIR", "")  # set but empty: as if unset
    assert data.find_data_dir() == data.REPO_DATA_DIR.resolve()


def test_explicit_dir_with_missing_file_has_no_fallback(tmp_path):
    d = write_set(tmp_path / "explicit")
    (d / NAMES["train_labels"]).unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        data.load_fashion_mnist(d)


def test_explicit_dir_is_used(tmp_path, monkeypatch):
    d = write_set(tmp_path / "explicit", monkeypatch)
    (x_tr, y_tr), _ = data.load_fashion_mnist(str(d))
    assert y_tr.tolist() == [0, 9, 4]
    expected = (np.arange(3 * 784) % 256).reshape(3, 28, 28, 1) / 255.0
    np.testing.assert_allclose(x_tr, expected, rtol=0, atol=1e-7)


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No local copy anywhere (nor in the working folder), so the loader must download;
    the course's repository is a folder of this test (file://), its cache one too."""
    monkeypatch.delenv("CAPSLIB_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo")
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setattr(data, "PACKAGE_PARENT", tmp_path / "site-packages")  # installed
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("CAPSNET_COURSE_URL", (tmp_path / "repository").as_uri())
    monkeypatch.setenv("CAPSNET_COURSE_CACHE", str(tmp_path / "course-cache"))
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path


def _repository(nowhere, monkeypatch):
    """A tiny set in the test's repository folder; the package's manifest names it."""
    src = write_set(nowhere / "repository" / "data" / "fashion-mnist", monkeypatch)
    manifest = {f"data/fashion-mnist/{name}": sha for name, sha in data.FILES.items()}
    monkeypatch.setattr(course, "manifest", lambda: manifest)
    return src


def test_download_failure_is_a_data_error(nowhere, monkeypatch):
    _repository(nowhere, monkeypatch)

    def offline(url, timeout=None):
        raise urllib.error.URLError(OSError("network unreachable"))

    monkeypatch.setattr(course.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not download data/fashion-mnist/.*network "
                                        "unreachable; on Colab or Kaggle check the runtime "
                                        "has internet") as err:
        data.load_fashion_mnist()
    # One line with the fixes, and not the download's traceback.
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None
    assert err.value.__suppress_context__
    for fix in ("Run from the course folder", "CAPSLIB_DATA_DIR=",
                "apt install dataset-fashion-mnist", str(nowhere / "notebooks"),
                (nowhere / "repository").as_uri()):
        assert fix in message
    assert not list((nowhere / "course-cache").rglob("*.gz*"))


@pytest.mark.parametrize("where", ["course", "course/notebooks"])
def test_data_is_found_from_the_working_folder(nowhere, monkeypatch, where):
    """A course copied elsewhere: run in it, or in its notebooks/ folder."""
    src = write_set(nowhere / "course" / "data" / "fashion-mnist", monkeypatch)
    (nowhere / where).mkdir(exist_ok=True)
    monkeypatch.chdir(nowhere / where)

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(course, "fetch", no_download)
    assert data.find_data_dir() == src.resolve()
    assert data.load_fashion_mnist()[0][1].tolist() == [0, 9, 4]


def test_download_goes_to_the_course_cache(nowhere, monkeypatch):
    _repository(nowhere, monkeypatch)
    calls = []
    urlopen = course.urllib.request.urlopen
    monkeypatch.setattr(course.urllib.request, "urlopen",
                        lambda url, timeout=None: calls.append(url) or urlopen(url, timeout=timeout))
    (x_tr, _), _ = data.load_fashion_mnist()
    cache = nowhere / "course-cache" / "data" / "fashion-mnist"
    assert x_tr.shape == (3, 28, 28, 1)
    assert sorted(p.name for p in cache.iterdir()) == sorted(data.FILES)
    assert len(calls) == 4 and all(u.startswith((nowhere / "repository").as_uri()) for u in calls)
    # Once cached, the cache is found without downloading again.
    calls.clear()
    assert data.find_data_dir() == cache.resolve() and calls == []


def test_a_download_that_is_not_the_course_file_is_refused(nowhere, monkeypatch):
    src = _repository(nowhere, monkeypatch)
    (src / NAMES["train_labels"]).write_bytes(b"not the labels")  # the server's copy is altered
    with pytest.raises(DataError, match="downloaded data/fashion-mnist/train-labels-idx1-ubyte.gz "
                                        "from file://.*not the course's file") as err:
        data.load_fashion_mnist()
    assert "\n" not in str(err.value) and err.value.__cause__ is None
    assert not (nowhere / "course-cache" / "data" / "fashion-mnist" / NAMES["train_labels"]).exists()
    assert not list((nowhere / "course-cache").rglob("*.part"))


# -- every DataError ------------------------------------------------------------


def test_wrong_checksum(tmp_path):
    d = write_set(tmp_path)  # valid files, but not the real hashes
    with pytest.raises(DataError, match="expected SHA-256"):
        data.load_fashion_mnist(d)


def test_corrupted_bytes_fail_the_checksum(tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(data.REPO_DATA_DIR, d)
    f = d / NAMES["test_labels"]
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*SHA-256"):
        data.load_fashion_mnist(d)


def test_corrupted_gzip_fails_to_decompress(tmp_path, monkeypatch):
    good = bytearray(gzip.compress(labels_idx([1, 2])))
    good[len(good) // 2] ^= 0xFF
    write_set(tmp_path, monkeypatch, test_labels=bytes(good))
    with pytest.raises(DataError, match="t10k-labels.*gzip"):
        data.load_fashion_mnist(tmp_path)


def test_truncated_gzip(tmp_path, monkeypatch):
    whole = gzip.compress(images_idx(3))
    write_set(tmp_path, monkeypatch, train_images=whole[: len(whole) // 2])
    with pytest.raises(DataError, match="train-images.*gzip"):
        data.load_fashion_mnist(tmp_path)


def test_not_gzip_at_all(tmp_path, monkeypatch):
    write_set(tmp_path, monkeypatch, train_images=images_idx(3))
    with pytest.raises(DataError, match="gzip"):
        data.load_fashion_mnist(tmp_path)


def test_payload_shorter_than_header_promises(tmp_path, monkeypatch):
    short = images_idx(3)[:-100]
    write_set(tmp_path, monkeypatch, train_images=gzip.compress(short))
    with pytest.raises(DataError, match="promises 3 items"):
        data.load_fashion_mnist(tmp_path)


def test_payload_longer_than_header_promises(tmp_path, monkeypatch):
    long = labels_idx([1, 2], count=1)
    write_set(tmp_path, monkeypatch, test_labels=gzip.compress(long))
    with pytest.raises(DataError, match="promises 1 items"):
        data.load_fashion_mnist(tmp_path)


def test_wrong_image_magic(tmp_path, monkeypatch):
    bad = gzip.compress(images_idx(2, magic=2049))
    write_set(tmp_path, monkeypatch, test_images=bad)
    with pytest.raises(DataError, match="magic number 2051, found 2049"):
        data.load_fashion_mnist(tmp_path)


def test_wrong_label_magic(tmp_path, monkeypatch):
    bad = gzip.compress(labels_idx([0, 9, 4], magic=2051))
    write_set(tmp_path, monkeypatch, train_labels=bad)
    with pytest.raises(DataError, match="magic number 2049, found 2051"):
        data.load_fashion_mnist(tmp_path)


def test_wrong_image_size(tmp_path, monkeypatch):
    bad = gzip.compress(images_idx(3, rows=27))
    write_set(tmp_path, monkeypatch, train_images=bad)
    with pytest.raises(DataError, match=r"shape \(28, 28\), found \(27, 28\)"):
        data.load_fashion_mnist(tmp_path)


def test_header_cut_short(tmp_path, monkeypatch):
    write_set(tmp_path, monkeypatch, test_labels=gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(DataError, match="IDX header"):
        data.load_fashion_mnist(tmp_path)


def test_label_out_of_range(tmp_path, monkeypatch):
    bad = gzip.compress(labels_idx([0, 10, 4]))
    write_set(tmp_path, monkeypatch, train_labels=bad)
    with pytest.raises(DataError, match=r"labels in 0..9, found 10"):
        data.load_fashion_mnist(tmp_path)


def test_image_and_label_counts_differ(tmp_path, monkeypatch):
    bad = gzip.compress(labels_idx([0, 1, 2, 3]))
    write_set(tmp_path, monkeypatch, train_labels=bad)
    with pytest.raises(DataError, match="expected 3 labels"):
        data.load_fashion_mnist(tmp_path)


def test_errors_say_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="CAPSLIB_DATA_DIR") as err:
        data.load_fashion_mnist(tmp_path)
    assert str(tmp_path) in str(err.value)


# -- split ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_labels():
    return data.load_fashion_mnist()[0][1]


def test_split_is_stratified_and_complete(train_labels):
    ids = np.arange(len(train_labels))
    (i_tr, y_tr), (i_val, y_val) = data.split_train_val(ids, train_labels)
    assert len(i_val) == 5000 and len(i_tr) == 55000
    assert np.bincount(y_val).tolist() == [500] * 10
    assert np.bincount(y_tr).tolist() == [5500] * 10
    assert np.array_equal(np.sort(np.concatenate([i_tr, i_val])), ids)
    assert np.array_equal(train_labels[i_val], y_val)


def test_split_is_deterministic(train_labels):
    ids = np.arange(len(train_labels))
    a = data.split_train_val(ids, train_labels, seed=1)[1][0]
    b = data.split_train_val(ids, train_labels, seed=1)[1][0]
    c = data.split_train_val(ids, train_labels, seed=2)[1][0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# -- augmentation ---------------------------------------------------------------


def dot_images(n, row, col):
    x = np.zeros((n, 28, 28, 1), np.float32)
    x[:, row, col, 0] = 1.0
    return x


def dot_positions(out):
    b, r, c, _ = np.nonzero(out)
    assert np.array_equal(b, np.arange(len(out))), "exactly one dot per image"
    return r, c


def test_shift_moves_content_at_most_two_pixels():
    x = dot_images(300, 14, 10)
    before = x.copy()
    out = data.augment_batch(x, np.random.default_rng(0), flip=False)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.array_equal(x, before), "input must be unchanged"
    r, c = dot_positions(out)
    assert set((r - 14).tolist()) == set(range(-2, 3))
    assert set((c - 10).tolist()) == set(range(-2, 3))


def test_flip_mirrors_about_half():
    out = data.augment_batch(dot_images(400, 14, 5), 0, max_shift=0)
    r, c = dot_positions(out)
    assert (r == 14).all() and set(c.tolist()) == {5, 22}
    assert 120 < (c == 22).sum() < 280


def test_shift_and_flip_together():
    out = data.augment_batch(dot_images(300, 5, 5), 3)
    r, c = dot_positions(out)
    assert (abs(r - 5) <= 2).all()
    near, mirrored = abs(c - 5) <= 2, abs(c - 22) <= 2
    assert (near | mirrored).all() and near.any() and mirrored.any()


def test_shift_pads_with_zeros():
    x = np.ones((200, 28, 28, 1), np.float32)
    out = data.augment_batch(x, 0, flip=False)
    sums = out.sum(axis=(1, 2, 3))
    allowed = {(28 - a) * (28 - b) for a in range(3) for b in range(3)}
    assert set(sums.tolist()) <= allowed and len(set(sums.tolist())) > 1
    assert set(np.unique(out).tolist()) == {0.0, 1.0}


def test_augment_is_deterministic_and_noop_when_disabled():
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    a = data.augment_batch(x, np.random.default_rng(7))
    b = data.augment_batch(x, np.random.default_rng(7))
    assert np.array_equal(a, b)
    same = data.augment_batch(x, 0, max_shift=0, flip=False)
    assert np.array_equal(same, x) and same is not x
    assert data.augment_batch(x[..., 0], 0).shape == (8, 28, 28)


# -- CapsuleDataset -------------------------------------------------------------


def tagged(n):
    """Images whose pixel (0, 0) encodes the sample id, labels = id % 10."""
    x = np.zeros((n, 28, 28, 1), np.float32)
    x[:, 0, 0, 0] = np.arange(n) / 1000.0
    return x, np.arange(n) % 10


def ids_of(batch_x):
    return np.rint(batch_x["image"][:, 0, 0, 0] * 1000).astype(int)


def test_batch_structure():
    x, y = tagged(250)
    ds = CapsuleDataset(x, y, batch_size=100, shuffle=False)
    assert len(ds) == 3
    bx, by = ds[0]
    assert set(bx) == {"image", "label"} and set(by) == {"lengths", "reconstruction"}
    assert bx["image"].shape == (100, 28, 28, 1) and bx["image"].dtype == np.float32
    assert bx["label"].shape == (100,) and bx["label"].dtype == np.int32
    assert by["lengths"].shape == (100, 10) and by["lengths"].dtype == np.float32
    assert np.array_equal(by["lengths"].argmax(1), bx["label"])
    assert np.array_equal(by["lengths"].sum(1), np.ones(100))
    assert np.array_equal(by["reconstruction"], bx["image"])
    assert np.array_equal(ids_of(bx), np.arange(100))
    assert ds[2][0]["image"].shape == (50, 28, 28, 1)
    with pytest.raises(IndexError):
        ds[3]


def test_shuffle_covers_every_sample_and_is_reproducible():
    x, y = tagged(250)
    ds = CapsuleDataset(x, y, batch_size=100, seed=5)
    twin = CapsuleDataset(x, y, batch_size=100, seed=5)
    epoch0 = np.concatenate([ids_of(ds[i][0]) for i in range(len(ds))])
    assert sorted(epoch0.tolist()) == list(range(250))
    assert not np.array_equal(epoch0, np.arange(250))
    assert np.array_equal(y[epoch0], np.concatenate([ds[i][0]["label"] for i in range(3)]))
    ds.on_epoch_end()
    epoch1 = np.concatenate([ids_of(ds[i][0]) for i in range(len(ds))])
    assert sorted(epoch1.tolist()) == list(range(250))
    assert not np.array_equal(epoch0, epoch1)
    twin.on_epoch_end()
    assert np.array_equal(ids_of(twin[1][0]), ids_of(ds[1][0]))


def test_augmented_batches_are_deterministic():
    x = dot_images(100, 14, 14)
    ds = CapsuleDataset(x, np.zeros(100, int), batch_size=50, augment=True, seed=1)
    a, b = ds[0], ds[0]
    assert np.array_equal(a[0]["image"], b[0]["image"])
    assert a[1]["reconstruction"] is a[0]["image"]
    assert not np.array_equal(a[0]["image"], x[:50])
    assert np.array_equal(x, dot_images(100, 14, 14)), "source must be unchanged"
    ds.on_epoch_end()
    assert not np.array_equal(ds[0][0]["image"], a[0]["image"])


def test_kwargs_reach_pydataset():
    x, y = tagged(10)
    assert CapsuleDataset(x, y, workers=2, max_queue_size=3).workers == 2


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, int), "255"),
        (np.zeros((4, 28, 28), np.float32), np.zeros(4, int), r"\(batch, 28, 28, 1\)"),
        (np.full((4, 28, 28, 1), 255, np.float32), np.zeros(4, int), "divide by 255"),
        (np.zeros((4, 28, 28, 1), np.float32), np.array([0, 1, 10, 2]), "0..9"),
        (np.zeros((4, 28, 28, 1), np.float32), np.array([0, 1, -1, 2]), "0..9"),
        (np.zeros((4, 28, 28, 1), np.float32), np.zeros(3, int), "length"),
        (np.zeros((4, 28, 28, 1), np.float32), np.eye(10)[:4], "one-hot"),
    ],
)
def test_dataset_rejects_bad_input(images, labels, message):
    with pytest.raises(ValueError, match=message):
        CapsuleDataset(images, labels)


class RecordingDataset(CapsuleDataset):
    def __getitem__(self, index):
        self.served.append((self.epoch, index))
        return super().__getitem__(index)


def test_keras_fit_sees_every_batch_once_per_reshuffled_epoch():
    # Keras' fit() calls on_epoch_end() once before the first epoch too
    # (EpochIterator.reset), so epoch k of training runs with counter k + 1.
    # Batches read before that (TF's signature peek) carry counter 0.
    keras = data.keras
    image = keras.Input((28, 28, 1), name="image")
    label = keras.Input((), dtype="int32", name="label")
    flat = keras.layers.Flatten()(image)
    feats = keras.layers.Concatenate()([flat, keras.ops.one_hot(label, 10)])
    lengths = keras.layers.Dense(10, activation="sigmoid", name="lengths")(flat)
    recon = keras.layers.Reshape((28, 28, 1), name="reconstruction")(
        keras.layers.Dense(784, activation="sigmoid")(feats)
    )
    model = keras.Model(
        {"image": image, "label": label},
        {"lengths": lengths, "reconstruction": recon},
    )
    model.compile("adam", loss={"lengths": "mse", "reconstruction": "mse"})
    x, y = tagged(45)
    ds = RecordingDataset(x, y, batch_size=20, augment=True)
    ds.served = []
    history = model.fit(ds, epochs=3, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 3
    trained = sorted(s for s in ds.served if s[0] > 0)
    assert trained == [(e, i) for e in (1, 2, 3) for i in range(3)]


def test_shift_images_moves_content_and_fills_zeros():
    from capslib.data import shift_images
    images = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4, 1)
    moved = shift_images(images, -1, 2)
    assert moved.shape == images.shape and moved.dtype == images.dtype
    np.testing.assert_array_equal(moved[0, ..., 0], [[0, 0, 5, 6], [0, 0, 9, 10], [0, 0, 0, 0]])
    np.testing.assert_array_equal(shift_images(images, 0, 0), images)
    assert not shift_images(images, 3, 0).any()  # as tall as the image: nothing left
    # The same as augment_batch's shift for every offset it can draw.
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1, size=(40, 7, 7, 1)).astype(np.float32)
    aug = data.augment_batch(x, np.random.default_rng(1), max_shift=2, flip=False)
    for a, img in zip(aug, x):
        assert any(np.array_equal(shift_images(img[None], dy, dx)[0], a)
                   for dy in range(-2, 3) for dx in range(-2, 3))


def test_rotate_images_keeps_shape_range_and_turns_the_content():
    from capslib.data import rotate_images
    images = np.zeros((1, 9, 9, 1), np.float32)
    images[0, 4, 6] = 1.0  # right of the centre
    turned = rotate_images(images, 90)  # counter-clockwise: to above the centre
    assert turned.shape == images.shape and turned.dtype == np.float32
    assert np.unravel_index(turned[0, ..., 0].argmax(), (9, 9)) == (2, 4)
    assert 0.0 <= turned.min() and turned.max() <= 1.0
    np.testing.assert_allclose(rotate_images(images, 0), images)


# -- wrong input is refused, with a message naming the problem --------------------


def test_non_finite_images_are_refused_with_a_count():
    x = np.zeros((6, 28, 28, 1), np.float32)
    x[2, 0, 0, 0] = np.nan
    x[2, 5, 5, 0] = np.inf
    x[4, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"3 NaN or infinite .* in 2 of 6 images .* index 2"):
        CapsuleDataset(x, np.zeros(6, int))
    with pytest.raises(ValueError, match="3 NaN or infinite"):
        data.augment_batch(x, 0)


@pytest.mark.parametrize("max_shift", [40, 28, -1, 2.5, "2"])
def test_augment_refuses_shifts_that_blank_or_make_no_sense(max_shift):
    # Before: max_shift=40 returned blank images, 2.5 was truncated to 2.
    with pytest.raises(ValueError, match=r"max_shift=.*0 to 27"):
        data.augment_batch(dot_images(2, 14, 14), 0, max_shift=max_shift)
    with pytest.raises(ValueError, match="max_shift"):
        CapsuleDataset(dot_images(2, 14, 14), np.zeros(2, int), augment=True, max_shift=max_shift)


def test_augment_refuses_images_without_rows_and_columns():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        data.augment_batch(np.zeros((4, 784), np.float32), 0)


@pytest.mark.parametrize("val_size", [0, 5, 96, 2.5])
def test_split_refuses_sizes_a_stratified_split_cannot_make(val_size):
    x, y = tagged(100)  # 10 classes: val_size must be 10..90
    with pytest.raises(ValueError, match="val_size"):
        data.split_train_val(x, y, val_size=val_size)


def test_set_epoch_gives_that_epoch_whatever_came_before():
    # A resumed run starts a new dataset at the epoch fit is at: it must see
    # the batches an uninterrupted run sees there.
    x, y = dot_images(40, 14, 14), np.arange(40) % 10
    walked = CapsuleDataset(x, y, batch_size=16, augment=True, seed=3)
    for _ in range(3):
        walked.on_epoch_end()
    jumped = CapsuleDataset(x, y, batch_size=16, augment=True, seed=3)
    jumped.set_epoch(3)
    for i in range(len(walked)):
        assert np.array_equal(walked[i][0]["image"], jumped[i][0]["image"])
        assert np.array_equal(walked[i][0]["label"], jumped[i][0]["label"])
    jumped.set_epoch(0)
    assert not np.array_equal(jumped[0][0]["image"], walked[0][0]["image"])


# -- transformed test sets (notebook 08) ---------------------------------------


def _dot_images(n, row=14, col=14):
    images = np.zeros((n, 28, 28, 1), "float32")
    images[:, row, col] = 1.0
    return images


def test_transform_shift_moves_each_image_by_amount_in_a_compass_direction():
    moved = transform_images(_dot_images(200), "shift", 4, seed=3)
    offsets = set()
    for image in moved[..., 0]:
        r, c = np.argwhere(image == 1.0)[0]
        offsets.add((int(r) - 14, int(c) - 14))
    assert offsets == {(dy, dx) for dy in (-4, 0, 4) for dx in (-4, 0, 4)} - {(0, 0)}
    again = transform_images(_dot_images(200), "shift", 4, seed=3)
    np.testing.assert_array_equal(moved, again)  # seeded


def test_transform_rotate_turns_both_ways_and_none_is_a_copy():
    images = np.zeros((40, 28, 28, 1), "float32")
    images[:, 14, 4:24] = 1.0  # a horizontal bar
    turned = transform_images(images, "rotate", 30, seed=0)
    tops = {float(np.round(t[..., 0][:10, :14].sum(), 3)) for t in turned}
    assert len(tops) == 2  # clockwise for some images, counter-clockwise for others
    same = transform_images(images, "none")
    assert same is not images and np.array_equal(same, images)
    with pytest.raises(ValueError, match="kind must be one of none, shift, rotate, scale"):
        transform_images(images, "flip")


def test_scale_images_zooms_about_the_centre():
    images = np.zeros((1, 28, 28, 1), "float32")
    images[0, 9:19, 9:19] = 1.0  # a 10 x 10 square around the centre (13.5, 13.5)
    small = scale_images(images, 0.5)[0, ..., 0]
    big = scale_images(images, 1.5)[0, ..., 0]
    assert small.sum() == pytest.approx(100 * 0.25, rel=0.15)
    assert big.sum() == pytest.approx(100 * 2.25, rel=0.15)
    for zoomed in (small, big):
        r, c = np.argwhere(zoomed > 0.5).mean(axis=0)
        assert r == pytest.approx(13.5, abs=0.6) and c == pytest.approx(13.5, abs=0.6)
    with pytest.raises(ValueError, match="factor must be > 0"):
        scale_images(images, 0)


def test_balanced_indices_take_the_first_of_each_class():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
    picked = balanced_indices(labels, 6)
    np.testing.assert_array_equal(picked, [0, 1, 2, 3, 4, 6])
    assert np.bincount(labels[picked]).tolist() == [2, 2, 2]


def test_first_of_each_class_is_in_class_order():
    labels = np.array([2, 0, 2, 1, 0, 1])
    picked = data.first_of_each_class(labels)
    np.testing.assert_array_equal(picked, [1, 3, 0])
    np.testing.assert_array_equal(labels[picked], [0, 1, 2])
    with pytest.raises(ValueError, match="no image of class 3"):
        data.first_of_each_class(labels, n_classes=4)


def test_notebook_08_titles_each_example_with_its_class():
    """08's figure of the transformed test sets titles column k with CLASS_NAMES[k]:
    the image in that column must be of class k (balanced_indices sorts by position)."""
    import json
    from pathlib import Path

    import capslib

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "08_does_routing_help.ipynb"
    sources = ["".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"]
               if cell["cell_type"] == "code"]
    source = next(s for s in sources if "set_title(capslib.CLASS_NAMES[k]" in s)
    # The column-k title names CLASS_NAMES[k] and shows images[k], one of x_test[first].
    assert "images[k, ..., 0]" in source and "x_test[first]" in source
    selection = next(line for line in source.splitlines() if line.startswith("first = "))
    _, (_, y_test) = data.load_fashion_mnist()
    namespace = {"capslib": capslib, "np": np, "y_test": y_test}
    exec(selection, namespace)
    titled = [capslib.CLASS_NAMES[label] for label in y_test[namespace["first"]]]
    assert titled == list(capslib.CLASS_NAMES)
