import json
import os
import subprocess
import sys

import keras
import pytest

from capslib.config import TrainConfig, config_for_profile
from capslib.train import read_log, train

TINY = dict(epochs=2, batch_size=32, train_limit=96, val_size=100, test_limit=100,
            profile="quick")


class Interrupt(keras.callbacks.Callback):
    """Stops the job after `after_epoch` like a kill would (nothing cleaned up)."""

    def __init__(self, after_epoch):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.heavy
def test_resume_after_interruption(tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 3})
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, run, verbose=0, callbacks=[Interrupt(after_epoch=1)])
    assert len(read_log(run / "log.csv")["loss"]) == 2
    assert (run / "best.keras").exists() and not (run / "metrics.json").exists()

    recorder = EpochRecorder()
    metrics = train(config, run, verbose=0, callbacks=[recorder])
    assert recorder.epochs == [2]  # only the missing epoch was trained
    history = read_log(run / "log.csv")
    assert history["epoch"] == [0, 1, 2]
    # The optimizer state came back: the decayed learning rate goes on decaying.
    assert history["learning_rate"][2] < history["learning_rate"][1] < history["learning_rate"][0]
    assert metrics["epochs"] == 3
    # A finished run is not trained or evaluated again.
    recorder = EpochRecorder()
    again = train(config, run, verbose=0, callbacks=[recorder])
    assert recorder.epochs == [] and again == metrics


def test_resume_refuses_another_recipe(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(**TINY).to_dict()))
    with pytest.raises(ValueError, match="another recipe.*batch_size"):
        train(TrainConfig(**{**TINY, "batch_size": 16}), tmp_path, verbose=0)


def test_resume_accepts_a_recipe_from_before_a_setting_was_added(tmp_path):
    saved = TrainConfig(**TINY).to_dict()
    del saved["model"], saved["decoder"]  # written before these settings existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"another recipe \(model: 'capsnet' -> 'baseline'\)"):
        train(TrainConfig(**{**TINY, "model": "baseline"}), tmp_path, verbose=0)


def test_model_setting_is_checked():
    with pytest.raises(ValueError, match="--model 'resnet': must be one of capsnet, baseline"):
        TrainConfig(model="resnet").validate()
    with pytest.raises(ValueError, match="--decoder 1: must be True or False"):
        TrainConfig(decoder=1).validate()


@pytest.mark.heavy
@pytest.mark.parametrize("settings, parameters, accuracy_key", [
    (dict(model="baseline"), 35_445_522, "probabilities_accuracy"),
    (dict(decoder=False, routing_iterations=1), 6_804_224, "accuracy"),
])
def test_one_job_trains_the_baseline_and_a_capsnet_without_decoder(
        tmp_path, settings, parameters, accuracy_key):
    config = TrainConfig(**{**TINY, "epochs": 1, "train_limit": 64, "test_limit": 50,
                            **settings})
    metrics = train(config, tmp_path, verbose=0)
    assert metrics["parameters"] == parameters
    assert metrics["model"] == config.model and metrics["n_test"] == 50
    assert 0 <= metrics["test_accuracy"] <= 1
    history = read_log(tmp_path / "log.csv")
    assert "val_loss" in history and (f"val_{accuracy_key}" in history
                                      or "val_accuracy" in history)
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert not (tmp_path / "reconstructions.png").exists()  # no decoder, nothing to redraw


def test_quick_profile_caps_the_recipe(monkeypatch):
    monkeypatch.setenv("CAPSLIB_PROFILE", "quick")
    config = config_for_profile(epochs=50, train_limit=100)
    assert config.profile == "quick" and config.epochs == 2 and config.train_limit == 100
    assert config_for_profile("full").epochs == 50
    monkeypatch.setenv("CAPSLIB_PROFILE", "nonsense")
    with pytest.raises(ValueError, match="CAPSLIB_PROFILE"):
        config_for_profile()


@pytest.mark.heavy
def test_cli_train_writes_metrics_and_figures(tmp_path):
    run = tmp_path / "cli-run"
    env = {**os.environ, "CAPSLIB_PROFILE": "quick", "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "capslib", "train", "--run-dir", str(run),
           "--epochs", "1", "--train-limit", "64", "--batch-size", "32"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "per_class_accuracy", "confusion_matrix",
                "parameters", "epochs", "train_images_per_s", "infer_images_per_s",
                "backend", "device"):
        assert key in metrics
    assert 0 <= metrics["val_accuracy"] <= 1 and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["parameters"] == 8_215_568 and metrics["epochs"] == 1
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n_test"] == 500
    assert len(metrics["per_class_accuracy"]) == 10
    for figure in ("learning_curves.png", "reconstructions.png"):
        assert (run / figure).stat().st_size > 1000

    done = subprocess.run([sys.executable, "-m", "capslib", "evaluate",
                           str(run / "best.keras")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.heavy
def test_bench_reports_both_models():
    from capslib.bench import run_benchmark
    result = run_benchmark(batch_size=4, steps=2, peak=False)
    for key in ("train_images_per_s", "naive_train_images_per_s", "infer_images_per_s",
                "gflops_per_s"):
        assert result[key] > 0
