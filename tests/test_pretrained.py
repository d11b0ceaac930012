"""The shipped-model path: save, verify checksums, load an ordinary CapsNet, evaluate."""
import json
import subprocess
import sys

import numpy as np
import pytest

from capslib import CapsNet, build_capsnet, pretrained
from capslib.model import load_capsnet

SMALL = dict(conv_filters=8, primary_maps=2, primary_dims=4, digit_dims=4, decoder_units=(8, 8))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    model = build_capsnet(**SMALL)
    folder = pretrained.save_pretrained(model, tmp_path_factory.mktemp("shipped"),
                                        metrics={"test_accuracy": 0.5})
    return model, folder


def test_load_returns_the_same_capsnet_within_float16(shipped):
    model, folder = shipped
    assert pretrained.available(folder)
    loaded = pretrained.load_pretrained(folder)
    assert isinstance(loaded, CapsNet) and loaded.count_params() == model.count_params()
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    want, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    np.testing.assert_allclose(got["lengths"], want["lengths"], atol=1e-3)
    assert np.array_equal(got["lengths"].argmax(1), want["lengths"].argmax(1))
    assert pretrained.load_metrics(folder) == {"test_accuracy": 0.5}
    assert isinstance(load_capsnet(folder), CapsNet)  # the folder works wherever a .keras does


def test_weights_are_stored_as_float16(shipped):
    _, folder = shipped
    with np.load(folder / "weights.npz") as stored:
        assert {stored[k].dtype for k in stored.files} == {np.dtype("float16")}


def test_missing_folder_says_there_is_no_shipped_model(tmp_path):
    assert not pretrained.available(tmp_path)
    with pytest.raises(pretrained.PretrainedError, match="no shipped model here"):
        pretrained.load_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["weights.npz", "config.json", "metrics.json"])
def test_an_altered_or_missing_file_is_refused(shipped, tmp_path, name):
    _, folder = shipped
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with open(copy / name, "ab") as f:
        f.write(b"\n")
    with pytest.raises(pretrained.PretrainedError, match=f"{name}: altered"):
        pretrained.load_pretrained(copy)
    (copy / name).unlink()
    with pytest.raises(pretrained.PretrainedError, match=f"{name}: missing"):
        pretrained.load_pretrained(copy)


def test_sums_written_by_sha256sum_in_binary_mode_are_accepted(shipped, tmp_path):
    # `sha256sum -b` writes "DIGEST *NAME"; it was refused as "no checksum for ...".
    _, folder = shipped
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    sums = (copy / "SHA256SUMS").read_text()
    (copy / "SHA256SUMS").write_text(sums.replace("  ", " *"))
    assert " *weights.npz" in (copy / "SHA256SUMS").read_text()
    assert pretrained.load_metrics(copy) == {"test_accuracy": 0.5}
    with open(copy / "weights.npz", "ab") as f:  # and still checked
        f.write(b"\n")
    with pytest.raises(pretrained.PretrainedError, match="weights.npz: altered"):
        pretrained.load_pretrained(copy)


def test_cli_evaluate_accepts_a_shipped_folder(shipped):
    _, folder = shipped
    done = subprocess.run([sys.executable, "-m", "capslib", "evaluate", str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert 0.0 <= result["accuracy"] <= 1.0


def test_ship_run_writes_a_verified_folder_with_a_card(tmp_path):
    """A finished run (faked: a small model with its metrics and log) shipped as the course's model."""
    model = build_capsnet(**SMALL)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "best.keras")
    metrics = {"val_accuracy": 0.1, "test_accuracy": 0.1, "best_epoch": 2, "epochs": 2,
               "per_class_accuracy": {"T-shirt/top": 0.1}, "parameters": model.count_params(),
               "train_images_per_s": 80.0, "n_train": 55000, "n_val": 5000, "n_test": 10000,
               "backend": "tensorflow", "keras_version": "3", "device": "CPU: test",
               "config": {"seed": 42, "batch_size": 100}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "log.csv").write_text("epoch,epoch_seconds,val_lengths_accuracy,val_loss\n"
                                 "0,60,0.1,0.9\n1,60,0.1,0.8\n")
    folder = tmp_path / "shipped"
    shipped = pretrained.ship_run(run, folder, command="python -m capslib train --run-dir run")
    assert 0 <= shipped["shipped_weights"]["test_accuracy"] <= 1
    card = (folder / "MODEL_CARD.md").read_text()
    assert "interim CPU model" in card and "epoch 2 selected on the validation loss" in card
    assert "python -m capslib train --run-dir run" in card
    # The card tells this run's story, on the images each figure was measured on.
    assert "2 epochs, as planned" in card and "time budget" not in card
    assert "on 10,000 test images, evaluated once" in card
    assert f"python -m capslib evaluate {folder}" in card
    sums = (folder / "SHA256SUMS").read_text()
    assert "MODEL_CARD.md" in sums and "weights.npz" in sums
    done = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert pretrained.load_metrics(folder)["shipped_weights"]["dtype"] == "float16"


def test_ship_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(pretrained.PretrainedError, match="not a finished run"):
        pretrained.ship_run(tmp_path, tmp_path / "out")


@pytest.mark.skipif(not pretrained.available(), reason="no shipped model in this checkout")
def test_the_course_model_gets_its_stored_count_on_the_first_test_images():
    """The weights in data/ are the ones measured: checksums verified, then the first
    500 test images classified as at shipping time (the card's 88.38% needs all 10,000:
    `python -m capslib evaluate data/capsnet-fashion-mnist`, about a minute)."""
    stored = pretrained.load_metrics()["shipped_weights"]
    got = pretrained.quick_check(n=stored["quick_check_images"])
    # Another CPU or backend may flip an image whose two longest capsules nearly tie.
    assert abs(got["quick_check_correct"] - stored["quick_check_correct"]) <= 2, (got, stored)
