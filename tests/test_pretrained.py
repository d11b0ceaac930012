"""The shipped-model path: save, verify checksums, load an ordinary CapsNet, evaluate."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def fake_run(run, val_accuracy=0.1):
    """A finished run, faked: a small CapsNet as best.keras, its checksum in state.json, metrics
    and log as the training job writes them."""
    from capslib.data import file_sha256
    model = build_capsnet(**SMALL)
    run.mkdir(parents=True)
    model.save(run / "best.keras")
    metrics = {"val_accuracy": val_accuracy, "test_accuracy": 0.1, "best_epoch": 2, "epochs": 2,
               "per_class_accuracy": {"T-shirt/top": 0.1}, "parameters": model.count_params(),
               "train_images_per_s": 80.0, "n_train": 55000, "n_val": 5000, "n_test": 10000,
               "backend": "tensorflow", "keras_version": "3", "device": "CPU: test",
               "config": {"seed": 42, "batch_size": 100}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps(metrics["config"]))
    (run / "log.csv").write_text("epoch,epoch_seconds,val_lengths_accuracy,val_loss\n"
                                 "0,60,0.1,0.9\n1,60,0.1,0.8\n")
    (run / "state.json").write_text(json.dumps({
        "epochs_done": 2, "backup": None, "best_epoch": 2, "history": [],
        "sha256": {"best.keras": file_sha256(run / "best.keras")}}))
    return run


def test_ship_run_writes_a_verified_folder_with_a_card(tmp_path):
    """A finished run (faked: a small model with its metrics and log) shipped as the course's model."""
    run = fake_run(tmp_path / "run")
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


# -- ship never loses, overwrites or downgrades -----------------------------------------------

SHIPPED = pretrained.SHIPPED_DIR  # the repository's model: copied, never written by a test


def course_model_copy(tmp_path):
    """A copy of the course's shipped folder (validation 90.00%) to ship over."""
    if not pretrained.available(SHIPPED):
        pytest.skip("no shipped model in this checkout")
    folder = tmp_path / "data" / "capsnet-fashion-mnist"
    shutil.copytree(SHIPPED, folder)
    return folder


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file()}


def ship_cli(capsys, *args):
    """``python -m capslib ship ...`` in this process: (exit code, stderr lines)."""
    from capslib.__main__ import main
    code = main(["ship", *map(str, args)])
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_ship_refuses_a_run_folder_as_out_and_leaves_it_untouched(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    other = fake_run(tmp_path / "other-run")
    partial = tmp_path / "partial"  # any folder holding a run's files
    partial.mkdir()
    (partial / "log.csv").write_text("epoch\n")
    before = {f: snapshot(f) for f in (run, other, partial)}
    for out in (run, other, partial, tmp_path):  # tmp_path: holds the run folder
        code, err = ship_cli(capsys, run, "--out", out)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: --out"), err
        assert "give --out a folder of its own" in err[0], err
    assert {f: snapshot(f) for f in before} == before  # config.json, metrics.json as they were
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine\n")
    code, err = ship_cli(capsys, run, "--out", notes)
    assert code == 2 and "holds todo.txt, which a shipped model does not" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "other-run", "partial", "run"]


def test_ship_verifies_best_keras_against_state_json(tmp_path, capsys):
    run = fake_run(tmp_path / "run", val_accuracy=0.95)
    build_capsnet(**SMALL).save(run / "best.keras")  # another model, after the run kept its own
    code, err = ship_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 2 and len(err) == 1 and "best.keras: changed since training kept it" in err[0], err
    (run / "state.json").unlink()
    with pytest.raises(pretrained.ShipRefused, match="state.json: missing"):
        pretrained.ship_run(run, tmp_path / "out")
    (run / "state.json").write_text(json.dumps({"epochs_done": 2, "sha256": {}}))
    with pytest.raises(pretrained.ShipRefused, match="no checksum of best.keras"):
        pretrained.ship_run(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_ship_refuses_a_worse_model_unless_forced_then_replaces_the_folder_whole(tmp_path, capsys):
    folder = course_model_copy(tmp_path)
    before = snapshot(folder)
    run = fake_run(tmp_path / "run", val_accuracy=0.21)
    code, err = ship_cli(capsys, run, "--out", folder)
    assert code == 2 and len(err) == 1, err
    assert "validation accuracy 90.00%, higher than this run's 21.00%" in err[0] and "--force" in err[0]
    assert snapshot(folder) == before
    code, err = ship_cli(capsys, run, "--out", folder, "--force")
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == sorted(pretrained.SHIPPED_FILES)
    assert pretrained.load_metrics(folder)["val_accuracy"] == 0.21
    assert "interim CPU model" in (folder / "MODEL_CARD.md").read_text()
    assert isinstance(pretrained.load_pretrained(folder), CapsNet)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["capsnet-fashion-mnist"]  # nothing left
    # A better run replaces it without --force.
    better = fake_run(tmp_path / "better", val_accuracy=0.5)
    assert pretrained.ship_run(better, folder)["val_accuracy"] == 0.5
    assert pretrained.load_metrics(folder)["val_accuracy"] == 0.5


def test_the_card_is_checked_with_the_weights(tmp_path):
    folder = course_model_copy(tmp_path)
    with open(folder / "MODEL_CARD.md", "a") as f:
        f.write("\n93% on the test set\n")
    with pytest.raises(pretrained.PretrainedError, match="MODEL_CARD.md: altered"):
        pretrained.load_pretrained(folder)


def test_ship_verifies_what_it_wrote_before_putting_it_in_place(tmp_path, monkeypatch):
    """Loaded back, the folder must classify the first test images as the evaluation did;
    if not, nothing is shipped and the old model stays."""
    folder = course_model_copy(tmp_path)
    before = snapshot(folder)
    real = pretrained.quick_check

    def wrong(*args, **kwargs):
        got = real(*args, **kwargs)
        return {**got, "quick_check_correct": got["quick_check_correct"] + 1}
    monkeypatch.setattr(pretrained, "quick_check", wrong)
    with pytest.raises(pretrained.PretrainedError, match="loaded back, the model gets"):
        pretrained.ship_run(fake_run(tmp_path / "run", val_accuracy=0.95), folder)
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["capsnet-fashion-mnist"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A tiny finished run of the real CapsNet (quick profile, 1 epoch on 64 images)."""
    run = tmp_path_factory.mktemp("quick") / "run"
    env = {**os.environ, "CAPSLIB_PROFILE": "quick"}
    done = subprocess.run([sys.executable, "-m", "capslib", "train", "--run-dir", str(run),
                           "--epochs", "1", "--train-limit", "64", "--test-limit", "100",
                           "--verbose", "0"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.mark.heavy
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_ship_killed_while_writing_or_evaluating_leaves_the_old_model_whole(quick_run, tmp_path, sig):
    """A real kill while weights.npz is being written, and one during the evaluation of the
    written weights: the old shipped folder is as it was (its files, its card) and loads;
    the next ship removes what a killed one left."""
    folder = course_model_copy(tmp_path)
    before = snapshot(folder)
    parent = folder.parent

    def work():
        return [p for p in parent.iterdir() if p.name.startswith(".capsnet-fashion-mnist.ship-")]

    def writing():
        return any((w / "weights.npz").exists() and not (w / "SHA256SUMS").exists() for w in work())

    def evaluating():
        return any((w / "SHA256SUMS").exists() for w in work())

    reached = []
    for name, moment, delay in (("writing", writing, 0.0), ("evaluating", evaluating, 1.5)):
        proc = subprocess.Popen([sys.executable, "-m", "capslib", "ship", str(quick_run), "--out",
                                 str(folder), "--force"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and not moment():
            time.sleep(0.002)
        time.sleep(delay)
        hit = proc.poll() is None and (name != "evaluating" or not any(
            (w / "MODEL_CARD.md").exists() for w in work()))
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=300)
        reached.append((name, hit, proc.returncode))
        assert hit, (name, proc.returncode, out, err[-2000:])
        if sig == signal.SIGTERM:
            assert proc.returncode == 143 and "Stopped by SIGTERM" in err, err[-2000:]
            assert not work(), [p.name for p in work()]
        else:
            assert proc.returncode == -signal.SIGKILL
        assert snapshot(folder) == before, name  # the old model, its card, its sums
        assert pretrained.load_metrics(folder)["val_accuracy"] == 0.9
    assert isinstance(pretrained.load_pretrained(folder), CapsNet)
    # The next ship (refused here: the tiny run is worse) first removes what killed ones left.
    with pytest.raises(pretrained.ShipRefused, match="higher than this run's"):
        pretrained.ship_run(quick_run, folder)
    assert sorted(p.name for p in parent.iterdir()) == ["capsnet-fashion-mnist"]
    assert snapshot(folder) == before
    print(reached)
