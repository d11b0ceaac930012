import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from capslib import runs
from capslib.__main__ import main
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


# -- sessions: a time budget pauses the run, the next session goes on ------------------

# A run of 3 epochs (the quick profile allows 2): the lesson profile at tiny sizes.
SESSION_FLAGS = ["--profile", "lesson", "--epochs", "3", "--batch-size", "16",
                 "--train-limit", "48", "--val-size", "20", "--test-limit", "20",
                 "--verbose", "0"]
SESSION = dict(epochs=3, batch_size=16, train_limit=48, val_size=20, test_limit=20)
TIMING = {"epoch_seconds", "train_images_per_s"}  # the only columns allowed to differ
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def session_config(**changes):
    return config_for_profile("lesson", **{**SESSION, **changes})


def assert_same_log_and_metrics(run, metrics, reference_run, reference):
    """As tests/test_interruptions.py compares an interrupted run with a clean one."""
    log, got = read_log(reference_run / "log.csv"), read_log(run / "log.csv")
    assert got["epoch"] == log["epoch"] == [0, 1, 2]
    assert set(got) == set(log)  # no column a clean run does not have
    for key in set(log) - TIMING:
        np.testing.assert_allclose(got[key], log[key], rtol=1e-4, err_msg=key)
    for key in ("best_epoch", "epochs", "confusion_matrix", "val_accuracy", "test_accuracy",
                "per_class_accuracy", "ended"):
        assert metrics[key] == reference[key], key


def no_test_set(*args, **kwargs):
    raise AssertionError("a paused run evaluated a data set")


@pytest.mark.heavy
def test_a_paused_run_goes_on_in_a_new_checkout_and_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch, capsys):
    reference = train(session_config(), tmp_path / "reference", verbose=0)
    assert reference["ended"] == "epochs done" and reference["epochs"] == 3
    first, second = tmp_path / "checkout-1", tmp_path / "checkout-2"
    first.mkdir(), second.mkdir()
    command = ["train", "--run-dir", "run", *SESSION_FLAGS, "--time-budget", "0.001"]

    # Session 1: the budget pauses after epoch 1; the test set is not touched.
    monkeypatch.chdir(first)
    with monkeypatch.context() as m:
        m.setattr("capslib.train.evaluate_model", no_test_set)
        assert main(command) == 0
    out = capsys.readouterr().out
    assert "paused after epoch 1 of 3: run the same command to go on" in out
    run = first / "run"
    assert not (run / "metrics.json").exists()
    state = runs.RunFolder(run).read_state()
    assert state.epochs_done == 1 and not state.stopped_early and state.backup
    assert "stopped_early" not in read_log(run / "log.csv")  # a pause is not an end
    # A state rebuilt from the folder (state.json lost) trains on too.
    rebuilt = runs.RunFolder(run).rebuild_state(steps_per_epoch=3, announce=False)
    assert rebuilt.epochs_done == 1 and not rebuilt.stopped_early

    # Session 2, in another checkout: the folder copied, another working folder, the same
    # command in a new process. It goes on from epoch 1 and pauses after epoch 2.
    shutil.copytree(run, second / "run")
    env = {**os.environ, "CAPSLIB_PROFILE": "quick", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "capslib", *command], cwd=second, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming run after epoch 1 of 3." in done.stdout
    assert "paused after epoch 2 of 3: run the same command to go on" in done.stdout
    run = second / "run"
    assert read_log(run / "log.csv")["epoch"] == [0, 1]
    assert not (run / "metrics.json").exists()

    # Session 3, the same command: epoch 3 is the last, so the run ends (the budget has
    # nothing left to pause) and the test set is evaluated, once.
    monkeypatch.chdir(second)
    kept = read_log(run / "log.csv")
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "Resuming run after epoch 2 of 3." in out
    assert "paused" not in out and "test accuracy" in out
    assert {k: v[:2] for k, v in read_log(run / "log.csv").items()} == kept  # not retrained
    metrics = json.loads((run / "metrics.json").read_text())
    assert_same_log_and_metrics(run, metrics, tmp_path / "reference", reference)
    assert metrics["ended"] == "epochs done" and not runs.RunFolder(run).read_state().stopped_early
    assert not (run / "backup").exists()
    # The first checkout's copy is untouched: still paused after epoch 1.
    assert runs.RunFolder(first / "run").read_state().epochs_done == 1


@pytest.mark.heavy
def test_time_budget_action_finish_ends_the_run_as_before(tmp_path, capsys):
    config = session_config(time_budget_s=0.001, time_budget_action="finish")
    metrics = train(config, tmp_path, verbose=0)
    assert metrics["epochs"] == 1 and metrics["ended"].startswith("stopped early: time budget")
    assert runs.RunFolder(tmp_path).read_state().stopped_early
    assert read_log(tmp_path / "log.csv")["stopped_early"] == [1.0]
    assert "paused" not in capsys.readouterr().out
    # Finished: another session does not train on, whatever its budget says.
    recorder = EpochRecorder()
    assert train(session_config(), tmp_path, verbose=0, callbacks=[recorder]) == metrics
    assert recorder.epochs == []


def scripted_val_loss(monkeypatch, losses):
    """Each epoch's val_loss as given (by epoch, whatever the session): the checkpoint
    keeps them, so the early stop sees them."""
    from capslib import train as train_module

    class Scripted(train_module.ThroughputLogger):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            logs["val_loss"] = losses[epoch]
    monkeypatch.setattr("capslib.train.ThroughputLogger", Scripted)


@pytest.mark.heavy
def test_patience_ends_the_run_early_across_a_pause_and_a_rebuilt_state_keeps_it(
        tmp_path, monkeypatch, capsys):
    scripted_val_loss(monkeypatch, [0.5, 0.6, 0.4])
    run = tmp_path / "run"
    config = session_config(patience=1, time_budget_s=0.001)
    # Session 1: epoch 1 is the best so far; the budget pauses.
    with monkeypatch.context() as m:
        m.setattr("capslib.train.evaluate_model", no_test_set)
        assert train(config, run, verbose=0) is None
    assert "paused after epoch 1 of 3" in capsys.readouterr().out

    # Session 2: epoch 2 does not lower val_loss: with --patience 1 the run ends there
    # (an end, not a pause, though the budget is reached too). Killed while evaluating.
    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr("capslib.train.evaluate_model", killed)
        with pytest.raises(KeyboardInterrupt):
            train(config, run, verbose=0)
    out = capsys.readouterr().out
    assert "Early stop after epoch 2: no lower validation loss in the 1 epochs after " \
           "epoch 1 (--patience 1)" in out and "paused" not in out
    assert runs.RunFolder(run).read_state().stopped_early
    assert read_log(run / "log.csv")["stopped_early"] == [0.0, 1.0]

    # state.json lost: the rebuilt state keeps the early stop, evaluates, trains no more.
    (run / "state.json").write_text("{}")
    recorder = EpochRecorder()
    metrics = train(session_config(), run, verbose=0, callbacks=[recorder])
    assert "2 epochs kept, best epoch 1, training stopped early" in capsys.readouterr().err
    assert recorder.epochs == [] and metrics["epochs"] == 2 and metrics["best_epoch"] == 1
    assert metrics["ended"].startswith("stopped early")


@pytest.mark.heavy
def test_a_lower_patience_given_on_resume_ends_the_run_without_training(
        tmp_path, monkeypatch, capsys):
    scripted_val_loss(monkeypatch, [0.5, 0.6, 0.7])
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # a kill after epoch 2, no patience given
        train(session_config(), run, verbose=0, callbacks=[Interrupt(after_epoch=1)])
    recorder = EpochRecorder()
    metrics = train(session_config(patience=1), run, verbose=0, callbacks=[recorder])
    assert recorder.epochs == [] and metrics["epochs"] == 2
    assert metrics["ended"] == ("early stop: no lower validation loss in the 1 epochs after "
                                "epoch 1 (--patience 1)")
    assert "training ends here" in capsys.readouterr().out
    assert read_log(run / "log.csv")["stopped_early"] == [0.0, 1.0]


def test_time_budget_pauses_only_where_it_stops_training():
    from capslib.scale import TimeBudget

    class Other(keras.callbacks.Callback):  # an early stop, before the budget's check
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x, y = np.zeros((4, 3)), np.zeros((4, 2))
    budget = TimeBudget(0.0)  # pauses after the first epoch
    model.fit(x, y, epochs=5, verbose=0, callbacks=[budget])
    assert budget.paused_after == 1 and budget.action == "pause"
    budget = TimeBudget(0.0)  # reached, but another callback ended the run: not a pause
    model.fit(x, y, epochs=3, verbose=0, callbacks=[Other(), budget])
    assert budget.paused_after is None
    budget = TimeBudget(0.0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[budget])  # the last epoch: no pause
    assert budget.paused_after is None
    with pytest.raises(ValueError, match="pause or finish"):
        TimeBudget(1, action="stop")


def test_patience_and_time_budget_action_are_checked():
    with pytest.raises(ValueError, match=r"--patience 0: must be >= 1 \(leave it out for no "
                                         r"early stop\)"):
        TrainConfig(patience=0).validate()
    with pytest.raises(ValueError, match="--time-budget-action 'stop': must be one of pause, "
                                         "finish"):
        TrainConfig(time_budget_action="stop").validate()
