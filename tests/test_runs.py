"""The run folder without training: lock, atomic writes, leftovers, bad input.

The interruptions of real training jobs are in test_interruptions.py.
"""
import dataclasses
import errno
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from capslib import runs
from capslib.__main__ import main
from capslib.config import ConfigError, TrainConfig, config_for_profile
from capslib.model import ModelFileError, build_capsnet
from capslib.runs import RunFolder, RunLock, RunState, read_log
from capslib.train import evaluate, train

TINY = dict(epochs=2, batch_size=16, train_limit=48, val_size=20, test_limit=20)


def tiny_config(**changes):
    return config_for_profile("quick", **{**TINY, **changes})


# -- atomic writes ---------------------------------------------------------------


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    runs.write_json_atomic(target, {"old": 1})
    with pytest.raises(KeyboardInterrupt):
        with runs.atomic_path(target) as tmp:
            tmp.write_text('{"new": ')  # half written when Ctrl-C comes
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "best.keras"
    target.write_bytes(b"the previous best model")
    with pytest.raises(runs.DiskFull, match="No space left.*best.keras.*run the same command"):
        with runs.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"the previous best model"
    assert os.listdir(tmp_path) == ["best.keras"]


def test_read_log_survives_doubled_headers_and_cut_lines(tmp_path):
    # What two jobs on one folder, or a kill during a write, used to leave behind.
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,val_loss\n0,1.0,2.0\nepoch,loss,val_loss\n0,1.5,2.5\n"
                   "1,0.5,1.5\n2,0.4\n3,0.")
    history = read_log(log)
    assert history["epoch"] == [0, 1, 2, 3]
    assert history["loss"] == [1.5, 0.5, 0.4, 0.0]
    assert history["val_loss"][:2] == [2.5, 1.5] and np.isnan(history["val_loss"][2])


# -- the lock ----------------------------------------------------------------------


def test_a_second_job_on_a_folder_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(runs.RunInUse, match=f"in use by another job: pid {os.getpid()}"):
            RunLock(tmp_path).__enter__()
        # Refused before anything is read or written, with exit code 1 and no traceback.
        assert main(["train", "--run-dir", str(tmp_path), "--epochs", "1"]) == 1
    with RunLock(tmp_path):  # released when the first job ends
        pass


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead), "host": "h",
                                                "since": "2020-01-01T00:00:00"}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by pid {dead}" in capsys.readouterr().out


# -- settings: checked before anything is written ---------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--learning-rate", "-1"], "--learning-rate -1.0: must be > 0 and <= 1"),
    (["--learning-rate", "nan"], "--learning-rate nan: must be > 0"),
    (["--time-budget", "-5"], "--time-budget -5.0: must be > 0"),
    (["--patience", "0"], "--patience 0: must be >= 1 (leave it out for no early stop)"),
    (["--epochs", "0"], "--epochs 0: must be >= 1"),
    (["--epochs", "-1"], "--epochs -1: must be >= 1"),
    (["--train-limit", "0"], "--train-limit 0: must be >= 1 (leave it out for all images)"),
    (["--val-size", "0"], "--val-size 0: must be from 10 to 59,990"),
    (["--routing-iterations", "0"], "--routing-iterations 0: must be >= 1"),
    (["--lr-decay", "1.5"], "--lr-decay 1.5: must be > 0 and <= 1"),
    (["--seed", "-3"], "--seed -3: must be from 0"),
    (["--profile", "full", "--batch-size", "100000"],
     "--batch-size 100000: must be at most the 55,000 training images"),
])
def test_bad_flags_get_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}" or err.strip().startswith(f"error: {message}")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not run.exists()  # nothing written


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="--epochs 0"):
        main(["train", "--run-dir", str(tmp_path), "--epochs", "0", "--debug"])
    monkeypatch.setenv("CAPSLIB_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["train", "--run-dir", str(tmp_path), "--epochs", "0"])


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("capslib.train.train", interrupted)
    assert main(["train", "--run-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "Interrupted (run the same command again" in err and "Traceback" not in err


def test_the_real_command_exits_2_without_a_traceback(tmp_path):
    env = {**os.environ, "CAPSLIB_PROFILE": "quick", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(runs.Path(runs.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "capslib", "train", "--run-dir",
                           str(tmp_path / "run"), "--learning-rate", "-1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error: --learning-rate -1.0: must be > 0" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_quick_profile_says_what_it_lowered(capsys):
    config = config_for_profile("quick", epochs=4, batch_size=100000, val_size=100)
    assert (config.epochs, config.batch_size, config.val_size) == (2, 32, 100)
    err = capsys.readouterr().err
    assert "--epochs 4 -> 2" in err and "--batch-size 100000 -> 32" in err
    assert "val-size" not in err and len(err.strip().splitlines()) == 1
    config_for_profile("quick")  # the profile's own values: nothing to say
    assert capsys.readouterr().err == ""


def test_library_config_is_checked_too(tmp_path):
    with pytest.raises(ConfigError, match="max_shift 40: must be from 0 to 27"):
        train(TrainConfig(max_shift=40), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- a finished or half-finished folder, and its leftovers ------------------------------


def finished_run(run, epochs):
    run.mkdir()
    config = tiny_config(epochs=epochs).to_dict()
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.json").write_text(json.dumps({"epochs": epochs, "config": config}))
    return config


def test_more_epochs_on_a_finished_run_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    config = finished_run(run, epochs=1)
    flags = ["--profile", "quick", "--run-dir", str(run), "--batch-size", "16", "--train-limit",
             "48", "--val-size", "20", "--test-limit", "20"]
    assert main(["train", "--epochs", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert "--epochs 2:" in err and "is finished" in err and "another --run-dir" in err
    # Before: exit 0, and config.json said 2 epochs while metrics.json said 1.
    assert json.loads((run / "config.json").read_text()) == config
    # The same command as before just reports the finished run.
    assert main(["train", "--epochs", "1", *flags]) == 0
    assert "is finished" in capsys.readouterr().out


def test_fewer_epochs_than_trained_are_refused(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_state(RunState(epochs_done=3))
    with pytest.raises(ConfigError, match="--epochs 2: .* has trained 3 epochs"):
        train(tiny_config(epochs=2), run.path)


@pytest.mark.parametrize("name", ["config.json", "state.json", "metrics.json"])
def test_a_damaged_file_is_reported_with_what_to_do(tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text('{"epochs": 2, "bat')
    with pytest.raises(runs.RunError, match=f"{name} is damaged.*start over"):
        train(tiny_config(), run)


def test_a_folder_from_older_code_is_refused_not_crashed_on(tmp_path):
    # Two jobs of the old code left two headers in one log and no state.json.
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.csv").write_text("epoch,loss\n0,1.0\nepoch,loss\n0,1.1\n")
    with pytest.raises(runs.RunError, match="log.csv but no state.json.*another --run-dir"):
        train(tiny_config(), run)


def test_a_damaged_best_model_is_reported(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_state(RunState(epochs_done=2, best_epoch=1, best_val_loss=0.5,
                             history=[{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.9}]))
    run.best_path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(runs.RunError, match="best.keras: not a Keras model file.*start over"):
        train(tiny_config(), run.path)


def test_a_damaged_backup_is_reported(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.backup_dir.mkdir(parents=True)
    (run.backup_dir / "epoch-1.keras").write_bytes(b"PK\x03\x04 cut short")
    run.write_state(RunState(epochs_done=1, backup="backup/epoch-1.keras", best_epoch=1,
                             best_val_loss=0.5, history=[{"epoch": 0, "loss": 1.0}]))
    with pytest.raises(runs.RunError, match="epoch-1.keras cannot be read.*start over"):
        train(tiny_config(), run.path)


def test_leftover_temporaries_and_unnamed_backups_are_removed(tmp_path):
    run = RunFolder(tmp_path)
    run.backup_dir.mkdir()
    for leftover in (tmp_path / ".tmp-123-best.keras", run.backup_dir / ".tmp-9-epoch-2.keras",
                     run.backup_dir / "epoch-1.keras", run.backup_dir / "epoch-2.keras"):
        leftover.write_bytes(b"x")
    state = RunState(epochs_done=2, backup="backup/epoch-2.keras")
    run.remove_leftovers(state)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["backup", "epoch-2.keras"]


# -- evaluate: three different mistakes, three different messages ------------------------


def test_evaluate_tells_which_mistake(tmp_path, capsys):
    with pytest.raises(ModelFileError, match="no such file"):
        evaluate(tmp_path / "missing.keras")
    # A folder: not "no such file" but what it lacks (SHA256SUMS) and what to give.
    with pytest.raises(ModelFileError, match="a folder, neither a .keras model file nor a "
                                             "shipped model .it holds no SHA256SUMS.; give"):
        evaluate(tmp_path)
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a Keras model file"):
        evaluate(text)
    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="tiny").save(other)
    with pytest.raises(ModelFileError, match="a Keras model .Sequential 'tiny'. but not a CapsNet"):
        evaluate(other)
    assert main(["evaluate", str(other)]) == 2
    err = capsys.readouterr().err
    assert "not a CapsNet" in err and "Traceback" not in err


def test_a_capsnet_file_is_loaded(tmp_path):
    from capslib.model import load_capsnet
    path = tmp_path / "m.keras"
    build_capsnet(routing_iterations=1, decoder=False).save(path)
    assert load_capsnet(path).routing_iterations == 1


# -- state.json and the files it names: checked before anything is removed -------------
# A tiny Keras model stands in for the CapsNet: the run folder only sees files.
# TINY's 48 images in batches of 16 are 3 steps per epoch, as the fake's fits.

STEPS = 3
# A run of 3 epochs (the quick profile allows 2): the lesson profile, TINY's sizes.
LONG = config_for_profile("lesson", **{**TINY, "epochs": 3})
LONG_FLAGS = ["--profile", "lesson", "--epochs", "3", "--batch-size", "16", "--train-limit",
              "48", "--val-size", "20", "--test-limit", "20"]


def kept_epochs(path, val_losses):
    """A run folder as the job leaves it after len(val_losses) kept epochs."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    run = RunFolder(path)
    run.path.mkdir(parents=True, exist_ok=True)
    state = RunState(recipe=LONG.to_dict())
    for epoch, val_loss in enumerate(val_losses):
        model.fit(np.zeros((STEPS, 3)), np.zeros((STEPS, 2)), batch_size=1, verbose=0)
        run.keep_epoch(model, epoch, {"loss": 1.0 - epoch / 10, "val_loss": val_loss}, state)
    (run.path / "config.json").write_text(json.dumps(LONG.to_dict()))
    return run, state


class Resumed(Exception):
    """Raised by the fake _fit: training would begin here."""


@pytest.fixture
def resumed_at(monkeypatch):
    """Replaces the training by a note of where it would resume (epochs kept, files)."""
    seen = {}

    def fake_fit(run, state, *args, **kwargs):
        seen.update(epochs_done=state.epochs_done, backup=state.backup,
                    files=sorted(p.name for p in run.backup_dir.iterdir()))
        raise Resumed
    monkeypatch.setattr("capslib.train._fit", fake_fit)
    return seen


def test_best_keras_is_a_copy_and_the_state_holds_checksums(tmp_path):
    run, state = kept_epochs(tmp_path / "run", [0.5, 0.6])
    # Epoch 1 is the best: its backup stays beside the last one, best.keras is a copy.
    assert sorted(p.name for p in run.backup_dir.iterdir()) == ["epoch-1.keras", "epoch-2.keras"]
    best_backup = run.backup_dir / "epoch-1.keras"
    assert not os.path.samefile(run.best_path, best_backup)
    saved = json.loads(run.state_path.read_text())
    assert saved["sha256"]["best.keras"] == runs.file_sha256(run.best_path) \
        == runs.file_sha256(best_backup) == saved["sha256"]["backup/epoch-1.keras"]
    assert saved["sha256"]["backup/epoch-2.keras"] == runs.file_sha256(run.backup_dir /
                                                                        "epoch-2.keras")
    # Writing best.keras in place (a notebook's model.save, cp) leaves the backups whole.
    with open(run.best_path, "r+b") as f:
        f.truncate(100)
    assert runs.file_sha256(best_backup) == saved["sha256"]["backup/epoch-1.keras"]


@pytest.mark.parametrize("damage", ["truncated", "replaced"])
def test_a_changed_best_keras_is_found_and_rebuilt_from_its_backup(
        tmp_path, resumed_at, capsys, damage):
    run, _ = kept_epochs(tmp_path / "run", [0.5, 0.6])
    expected = runs.file_sha256(run.best_path)
    if damage == "truncated":
        run.best_path.write_bytes(b"")
    else:  # `cp other.keras best.keras`: a whole model file, of another epoch
        shutil.copyfile(run.backup_dir / "epoch-2.keras", run.best_path)
    with pytest.raises(Resumed):
        train(LONG, run.path)
    err = capsys.readouterr().err
    assert "best.keras: changed since" in err and "rebuilt from backup/epoch-1.keras" in err
    assert runs.file_sha256(run.best_path) == expected
    assert resumed_at["epochs_done"] == 2
    assert resumed_at["files"] == ["epoch-1.keras", "epoch-2.keras"]


def test_a_changed_best_keras_without_a_copy_is_refused_keeping_everything(tmp_path):
    run, state = kept_epochs(tmp_path / "run", [0.5, 0.6])
    (run.backup_dir / "epoch-1.keras").unlink()  # the best epoch's only other copy
    run.best_path.write_bytes(b"PK\x03\x04 overwritten")
    assert main(["train", "--run-dir", str(run.path), *LONG_FLAGS]) == 1
    assert os.listdir(run.backup_dir) == ["epoch-2.keras"]  # the last epoch is kept
    assert json.loads(run.state_path.read_text())["epochs_done"] == 2


def test_an_empty_state_mid_run_is_rebuilt_not_retrained(tmp_path, resumed_at, capsys):
    # Before: exit 0 after deleting backup/epoch-1.keras and training epoch 1 again.
    run, _ = kept_epochs(tmp_path / "run", [0.5, 0.4])
    run.state_path.write_text("{}")
    with pytest.raises(Resumed):
        train(LONG, run.path)
    err = capsys.readouterr().err
    assert "state.json is damaged (no epochs_done, backup, best_epoch, history): rebuilt " \
           "from backup/epoch-2.keras and log.csv (2 epochs kept, best epoch 2)" in err
    assert resumed_at == {"epochs_done": 2, "backup": "backup/epoch-2.keras",
                          "files": ["epoch-2.keras"]}
    rebuilt = run.read_state()
    assert rebuilt.best_epoch == 2 and rebuilt.best_val_loss == 0.4
    assert [r["epoch"] for r in rebuilt.history] == [0, 1]


# The keys of state.json as the capslib before pausing wrote them (and reads them: it
# refuses unknown keys). A session with this capslib on a folder a running job of the older
# one holds (the course model's) must read its state, and write one that job could read.
STATE_KEYS_BEFORE_PAUSING = {"epochs_done", "backup", "best_epoch", "best_val_loss",
                             "stopped_early", "history", "sha256", "recipe", "backends"}


@pytest.mark.parametrize("extra", [[], ["--time-budget", "600"], ["--patience", "5"],
                                   ["--time-budget", "60", "--time-budget-action", "finish"]])
def test_a_folder_written_before_pausing_resumes_with_the_same_command(tmp_path, resumed_at,
                                                                      extra):
    run, state = kept_epochs(tmp_path / "run", [0.5, 0.4])
    new = {"time_budget_action", "patience"}  # the settings added with pausing
    old_recipe = {k: v for k, v in LONG.to_dict().items() if k not in new}
    (run.path / "config.json").write_text(json.dumps(old_recipe))
    saved = json.loads(run.state_path.read_text())
    saved["recipe"] = old_recipe
    assert set(saved) == STATE_KEYS_BEFORE_PAUSING
    run.state_path.write_text(json.dumps(saved))
    assert "stopped_early" not in read_log(run.log_path)  # as a run without a budget left it
    with pytest.raises(Resumed):  # the same command (a budget or a patience added or not)
        main(["train", "--run-dir", str(run.path), *LONG_FLAGS, *extra])
    assert resumed_at == {"epochs_done": 2, "backup": "backup/epoch-2.keras",
                          "files": ["epoch-2.keras"]}
    # What this capslib wrote before training on, the older one reads back.
    assert set(json.loads(run.state_path.read_text())) == STATE_KEYS_BEFORE_PAUSING
    assert {f.name for f in dataclasses.fields(RunState)} == STATE_KEYS_BEFORE_PAUSING
    assert not run.read_state().stopped_early


def test_a_paused_folder_rebuilt_from_log_csv_trains_on(tmp_path, resumed_at, capsys):
    # A pause leaves what a kill between epochs leaves: no stopped_early in log.csv.
    run, _ = kept_epochs(tmp_path / "run", [0.5, 0.4])
    run.state_path.write_text("{}")
    with pytest.raises(Resumed):
        main(["train", "--run-dir", str(run.path), *LONG_FLAGS, "--time-budget", "600"])
    assert resumed_at["epochs_done"] == 2
    assert "training stopped early" not in capsys.readouterr().err


@pytest.mark.parametrize("text", [
    '{"epochs_done": "2", "backup": "backup/epoch-2.keras", "best_epoch": 2, "history": []}',
    '{"epochs_done": 2, "backup": "backup/epoch-2.keras", "best_epoch": "x", "history": []}',
    '{"epochs_done": 2, "backup": 7, "best_epoch": 2, "history": {}}',
    '[1, 2]', '"text"', 'null',
])
def test_a_hand_damaged_state_is_rebuilt_without_a_traceback(tmp_path, capsys, text,
                                                             resumed_at):
    run, _ = kept_epochs(tmp_path / "run", [0.5, 0.4])
    run.state_path.write_text(text)
    with pytest.raises(Resumed):
        main(["train", "--run-dir", str(run.path), *LONG_FLAGS])
    assert "state.json is damaged (" in capsys.readouterr().err
    assert resumed_at["epochs_done"] == 2


@pytest.mark.parametrize("edit", [
    pytest.param(lambda s: {**s, "backup": None}, id="no backup named"),
    pytest.param(lambda s: {**s, "epochs_done": 0, "backup": None, "best_epoch": None,
                            "best_val_loss": None, "history": [], "sha256": {}},
                 id="rolled back to 0 epochs"),
    pytest.param(None, id="not JSON"),
])
def test_a_state_the_folder_contradicts_is_rebuilt_never_a_silent_retrain(
        tmp_path, resumed_at, capsys, edit):
    # Before: "backup": null retrained epoch 3 from fresh weights, and a state rolled back
    # to 0 deleted both backups and trained from scratch; a cut state.json was refused.
    run, _ = kept_epochs(tmp_path / "run", [0.5, 0.4])
    text = run.state_path.read_text()
    run.state_path.write_text(text[:200] if edit is None
                              else json.dumps(edit(json.loads(text))))
    with pytest.raises(Resumed):
        train(LONG, run.path)
    assert "rebuilt from backup/epoch-2.keras and log.csv (2 epochs kept, best epoch 2)" \
        in capsys.readouterr().err
    assert resumed_at == {"epochs_done": 2, "backup": "backup/epoch-2.keras",
                          "files": ["epoch-2.keras"]}


def test_a_rebuilt_state_still_refuses_another_learning_rate(tmp_path, capsys):
    # config.json deleted and state.json damaged: log.csv's learning rates keep the recipe.
    run, _ = kept_epochs(tmp_path / "run", [0.5])
    rows = read_log(run.log_path)
    rows["learning_rate"] = [LONG.learning_rate * LONG.lr_decay]
    run.write_log([{k: v[0] for k, v in rows.items()}])
    run.config_path.unlink()
    run.state_path.write_text("{}")
    flags = [*LONG_FLAGS, "--learning-rate", "0.01"]
    assert main(["train", "--run-dir", str(run.path), *flags]) == 2
    err = capsys.readouterr().err
    assert "log.csv's learning rate after epoch 1 is 0.00095" in err and "give 0.0095" in err
    assert run.state_path.read_text() == "{}"  # nothing written


def test_log_csv_tells_a_rebuilt_state_that_training_stopped_early(tmp_path, capsys):
    run, state = kept_epochs(tmp_path / "run", [0.5, 0.4])
    for row in state.history:  # as the job writes it when the time budget stops training
        row["stopped_early"] = int(row is state.history[-1])
    run.write_log(state.history)
    rebuilt = run.rebuild_state(STEPS, damage="state.json is damaged")
    assert rebuilt.stopped_early and rebuilt.epochs_done == 2
    assert run.contradiction(rebuilt, epochs=3) is None  # a finished training, not a rollback
    assert "training stopped early" in capsys.readouterr().err
    run.write_log([{k: v for k, v in r.items() if k != "stopped_early"} for r in state.history])
    assert not run.rebuild_state(STEPS, damage="state.json is damaged").stopped_early


@pytest.mark.heavy
def test_best_keras_written_over_during_the_run_is_not_what_gets_evaluated(tmp_path, capsys):
    # Before: a model copied over best.keras mid-run was evaluated and reported, exit 0.
    clean = train(tiny_config(), tmp_path / "clean", verbose=0)

    class Overwrite(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == TINY["epochs"] - 1:  # after the last kept epoch: nothing copies it again
                build_capsnet(conv_filters=8, primary_maps=2).save(tmp_path / "other.keras")
                shutil.copyfile(tmp_path / "other.keras", tmp_path / "run" / "best.keras")

    got = train(tiny_config(), tmp_path / "run", verbose=0, callbacks=[Overwrite()])
    err = capsys.readouterr().err
    assert "best.keras: changed since epoch" in err and "rebuilt from backup/" in err
    assert (got["val_accuracy"], got["test_accuracy"]) == \
        (clean["val_accuracy"], clean["test_accuracy"])


def test_a_damaged_state_the_folder_cannot_prove_is_refused_keeping_everything(
        tmp_path, capsys):
    run, _ = kept_epochs(tmp_path / "run", [0.5, 0.4])
    run.state_path.write_text('{"epochs_done": "2"}')
    run.log_path.write_text("epoch,loss,val_loss\n0,1.0,0.5\n")  # epoch 2's row is lost
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    assert main(["train", "--run-dir", str(run.path), *LONG_FLAGS]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "state.json is damaged" in err and "backup/epoch-2.keras: log.csv lacks its rows" \
        in err and "Nothing was removed" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in run.path.rglob("*")
            if p.is_file() and p.name != ".lock"} == before  # nothing removed nor changed


def test_a_missing_named_backup_is_refused_and_the_good_one_kept(tmp_path, resumed_at,
                                                                  capsys):
    # A copy of a live folder: state.json names epoch 2, backup/ holds only epoch 1.
    # Before: capslib deleted backup/epoch-1.keras, then said "start over".
    run, _ = kept_epochs(tmp_path / "run", [0.4, 0.5])
    (run.backup_dir / "epoch-2.keras").unlink()
    with pytest.raises(runs.RunError, match="epoch-2.keras cannot be read as the model and "
                       r"optimizer after epoch 2, which state.json says it is \(missing\). "
                       "Nothing was removed.*delete .*state.json to go back to epoch 1"):
        train(LONG, run.path)
    assert os.listdir(run.backup_dir) == ["epoch-1.keras"]
    run.state_path.unlink()  # the way out the message gives
    with pytest.raises(Resumed):
        train(LONG, run.path)
    assert resumed_at["epochs_done"] == 1
    assert "state.json is missing: rebuilt from backup/epoch-1.keras" in capsys.readouterr().err


def test_a_backup_of_another_epoch_is_not_taken_for_the_named_one(tmp_path):
    run, state = kept_epochs(tmp_path / "run", [0.4, 0.5])
    # No checksum (an older capslib's state): the optimizer's step count decides.
    shutil.copyfile(run.backup_dir / "epoch-1.keras", run.backup_dir / "epoch-2.keras")
    state.sha256 = {}
    with pytest.raises(runs.RunError, match=r"after 3 training steps, not epoch 2 \(6 steps\)"):
        run.verify(state, STEPS)
    assert run.check_model_file("backup/epoch-1.keras", 1, STEPS) is None


def test_a_binary_log_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(runs.RunError, match="log.csv is damaged .not a CSV text file"):
        read_log(run / "log.csv")
    assert main(["train", "--run-dir", str(run), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "log.csv but no state.json" in err and "Traceback" not in err


# -- the recipe lives in state.json too ------------------------------------------------


@pytest.mark.parametrize("flag, value, setting", [
    ("--learning-rate", "0.01", "learning_rate"), ("--seed", "7", "seed"),
    ("--batch-size", "8", "batch_size")])
def test_deleting_config_json_does_not_change_the_recipe(tmp_path, capsys, flag, value,
                                                         setting):
    run, _ = kept_epochs(tmp_path / "run", [0.5])
    run.config_path.unlink()
    flags = {"--profile": "lesson", "--epochs": "3", "--batch-size": "16", "--train-limit": "48",
             "--val-size": "20", "--test-limit": "20", flag: value}
    assert main(["train", "--run-dir", str(run.path),
                 *[x for kv in flags.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert f"holds a run with another recipe ({setting}:" in err
    assert not run.config_path.exists() and run.read_state().epochs_done == 1


# -- what the job tells about itself ------------------------------------------------------


def test_a_backend_switch_is_said_and_recorded(tmp_path, resumed_at, capsys):
    run, state = kept_epochs(tmp_path / "run", [0.5])
    state.backends = ["torch"]
    run.write_state(state)
    with pytest.raises(Resumed):
        train(LONG, run.path)
    backend = keras.backend.backend()
    assert f"trained with torch so far; it goes on with {backend}" in capsys.readouterr().out
    assert run.read_state().backends == ["torch", backend]


def test_a_changed_best_keras_of_a_finished_run_is_reported(tmp_path, capsys):
    run = tmp_path / "run"
    finished_run(run, epochs=1)
    (run / "best.keras").write_bytes(b"another model")
    RunFolder(run).write_state(RunState(epochs_done=1, best_epoch=1, history=[{"epoch": 0}],
                                        sha256={"best.keras": "0" * 64}))
    train(tiny_config(epochs=1), run)
    assert "best.keras is not the model this run evaluated" in capsys.readouterr().out


# -- non-finite training and a full disk ------------------------------------------------


def test_an_epoch_with_nan_weights_or_loss_is_not_kept(tmp_path):
    run, state = kept_epochs(tmp_path / "run", [0.5])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(runs.NonFinite, match=r"epoch 2: training diverged \(loss not finite\)"
                       ".*Epochs 1 to 1 are kept.*lower --learning-rate"):
        run.keep_epoch(model, 1, {"loss": float("nan"), "val_loss": 0.3}, state)
    model.layers[0].kernel.assign(np.full((3, 2), np.nan, "float32"))  # val_loss finite
    with pytest.raises(runs.NonFinite, match=r"epoch 2: training diverged \(weights not"):
        run.keep_epoch(model, 1, {"loss": 0.1, "val_loss": 0.3}, state)
    assert run.read_state().epochs_done == 1 and run.read_state().best_epoch == 1
    assert sorted(os.listdir(run.backup_dir)) == ["epoch-1.keras"]


def test_a_full_disk_says_how_much_space_the_run_needs(tmp_path, monkeypatch):
    run, state = kept_epochs(tmp_path / "run", [0.5])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(keras.Model, "save", full)
    with pytest.raises(runs.DiskFull, match=r"No space left.*run the same command again.*"
                       r"This run needs about [0-9.]+ GB free in .*; [0-9.]+ GB are free"):
        run.keep_epoch(model, 1, {"loss": 0.1, "val_loss": 0.3}, state)
    assert run.read_state().epochs_done == 1


# -- every OS error is one line naming the path and what to do -----------------------------


def run_dir_error(capsys, run_dir):
    assert main(["train", "--run-dir", str(run_dir), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_run_dir_that_is_a_file_or_below_one(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    assert f"{file}: a file, not a folder; choose another --run-dir" in run_dir_error(
        capsys, file)
    err = run_dir_error(capsys, file / "run")
    assert str(file) in err and "a part of the path is a file" in err
    assert file.read_text() == "x"


def test_run_dir_with_a_name_too_long(tmp_path, capsys):
    err = run_dir_error(capsys, tmp_path / ("x" * 300))
    assert "File name too long" in err and "choose a shorter --run-dir" in err


def test_an_empty_run_dir_is_refused(capsys):
    assert main(["train", "--run-dir", "", "--epochs", "1"]) == 2
    assert "--run-dir '': give a folder" in capsys.readouterr().err


def read_only(monkeypatch, folder):
    """Writes below ``folder`` fail as on read-only media (root ignores chmod)."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", guarded)


def test_a_read_only_run_dir_is_one_line_before_training(tmp_path, capsys, monkeypatch):
    read_only(monkeypatch, tmp_path)
    err = run_dir_error(capsys, tmp_path)
    assert f"{tmp_path}/.lock: Read-only file system; the file system is read-only" in err


def test_a_finished_run_on_read_only_media_is_reported(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    finished_run(run, epochs=1)
    read_only(monkeypatch, run)
    train(tiny_config(epochs=1), run)
    assert "is finished" in capsys.readouterr().out


# -- Ctrl-C and SIGTERM alike, even inside Keras calls that swallow them -------------------


@pytest.fixture
def default_sigint():
    """Ctrl-C's default handler: a test run started in the background (`cmd &`, as some CI
    runners do) inherits SIGINT ignored, and capslib rightly leaves an ignored SIGINT alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_sigint_in_child():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def swallowing_loader(monkeypatch, signum):
    """Keras' loading as it behaves: a bare ``except:`` around a part of it."""
    load = keras.saving.load_model

    def loader(*args, **kwargs):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(1)  # the handler runs here
        except:  # noqa: E722 (what Keras does)
            pass
        return load(*args, **kwargs)
    monkeypatch.setattr(keras.saving, "load_model", loader)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_swallowed_while_a_model_loads_still_stops(tmp_path, monkeypatch, signum,
                                                             default_sigint):
    from capslib.model import load_classifier
    path = tmp_path / "m.keras"
    build_capsnet(routing_iterations=1, decoder=False).save(path)
    swallowing_loader(monkeypatch, signum)
    with pytest.raises(runs.Interrupted) as caught:
        with runs.interrupt_handling():
            load_classifier(path)
    assert caught.value.signum == signum
    assert signal.getsignal(signal.SIGTERM) is not runs._on_signal  # handlers restored


@pytest.mark.parametrize("signum, code, text", [(signal.SIGINT, 130, "Interrupted"),
                                                (signal.SIGTERM, 143, "Stopped by SIGTERM")])
def test_the_command_exits_130_or_143_saying_to_run_it_again(monkeypatch, capsys, signum,
                                                             code, text, default_sigint):
    def swallowed(*args, **kwargs):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(1)
        except:  # noqa: E722
            pass
        runs.check_interrupted()
        return {"never": "reached"}
    monkeypatch.setattr("capslib.train.train", swallowed)
    assert main(["train", "--run-dir", "unused"]) == code
    err = capsys.readouterr().err
    assert f"{text} (run the same command again: it goes on from there)." in err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, signum, code):
    # Before: a KeyboardInterrupt traceback through the imports, or a silent exit 143; under
    # JAX the handler's exit was swallowed by JAX's gc callback and the job trained on.
    job = subprocess.Popen([sys.executable, "-m", "capslib", "train", "--profile", "quick",
                            "--run-dir", str(tmp_path / "run")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=_default_sigint_in_child)
    time.sleep(0.8)  # importing TensorFlow takes longer
    job.send_signal(signum)
    out, err = job.communicate(timeout=120)
    assert job.returncode == code, err[-1000:]
    assert "while starting, before anything was written" in err and "Traceback" not in err
    assert "Exception ignored" not in err
    assert not (tmp_path / "run").exists()


def test_a_second_signal_while_the_job_stops_changes_nothing(tmp_path):
    # Before: a second Ctrl-C 0.15 s after the first printed "Exception ignored ...
    # KeyboardInterrupt" (the defaults were back while Python cleaned up), and SIGTERM
    # then killed the job before its line was printed.
    job = subprocess.Popen([sys.executable, "-m", "capslib", "train", "--profile", "quick",
                            "--run-dir", str(tmp_path / "run"), "--epochs", "2", "--verbose",
                            "2", "--train-limit", "48", "--val-size", "20", "--test-limit", "20",
                            "--batch-size", "16"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint_in_child)
    for line in job.stdout:  # training has begun
        if line.startswith("Epoch 1/2"):
            break
    job.send_signal(signal.SIGINT)
    time.sleep(0.15)
    job.send_signal(signal.SIGTERM)
    time.sleep(0.15)
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "Interrupted (run the same command again: it goes on from there).")
    assert "Traceback" not in err and "Exception ignored" not in err


def test_after_the_command_line_later_signals_are_only_noted(default_sigint):
    try:
        with runs.interrupt_handling(restore=False):
            pass
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # nothing raised: the command is exiting
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def swallowed_by_a_gc_callback(signum):
    """The signal arrives while a garbage-collector callback runs (JAX has one): whatever
    the handler raises there is dropped by Python ("Exception ignored in ...")."""
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signum)  # the handler runs inside the callback
    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert fired


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_a_gc_callback_swallows_is_acted_on_and_not_reported(signum, capsys,
                                                                      default_sigint):
    with pytest.raises(runs.Interrupted) as caught:
        with runs.interrupt_handling():
            with runs.interrupt_handling():  # nested (the command line around train())
                swallowed_by_a_gc_callback(signum)  # no exception comes out here
            runs.check_interrupted()  # still remembered after the inner block
    assert caught.value.signum == signum
    assert "Exception ignored" not in capsys.readouterr().err
    # Nothing left behind: handlers restored, nothing remembered.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and not runs._received
    # A signal swallowed after the last check stops the block when it ends.
    with pytest.raises(runs.Interrupted):
        with runs.interrupt_handling():
            swallowed_by_a_gc_callback(signum)


def test_training_stops_at_the_batch_after_a_swallowed_signal(default_sigint):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    seen = []

    class SwallowAtBatch2(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)
            if batch == 2:
                swallowed_by_a_gc_callback(signal.SIGTERM)
    with pytest.raises(runs.Interrupted):
        with runs.interrupt_handling():
            model.fit(np.zeros((10, 3)), np.zeros((10, 2)), batch_size=1, epochs=3, verbose=0,
                      callbacks=[runs.StopOnSignal(), SwallowAtBatch2()])
    assert seen == [0, 1, 2]


# `import capslib` alone imports nothing heavy: Keras comes with the first submodule or name
# used, whichever way (capslib's __getattr__, or an import of the submodule itself).
@pytest.mark.parametrize("statement", ["import capslib; capslib.CLASS_NAMES",
                                       "from capslib import CapsNet", "import capslib.train"])
def test_a_ctrl_c_swallowed_while_a_script_imports_capslib_still_stops_it(statement):
    # Before: JAX's gc callback swallowed it and the script went on (and trained).
    code = ("import gc, signal, sys\n"
            "def callback(phase, info):\n"
            "    if 'keras' in sys.modules and 'capslib' in sys.modules:\n"
            "        gc.callbacks.remove(callback); signal.raise_signal(signal.SIGINT)\n"
            "gc.callbacks.append(callback)\n"
            "try:\n"
            f"    {statement}\n"
            "except KeyboardInterrupt:\n"
            "    print('stopped')\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, preexec_fn=_default_sigint_in_child)
    assert job.returncode == 0, job.stderr[-1000:]
    assert job.stdout.split() == ["stopped", "True"]
    assert "Exception ignored" not in job.stderr


def test_a_signal_swallowed_while_the_command_starts_still_stops_it():
    # What JAX's import did to the start-up handler's exit, then the command went on training.
    code = ("import sys; sys.argv = ['-m']; import capslib, gc, signal\n"
            "from capslib import _startup\n"
            "def callback(phase, info):\n"
            "    gc.callbacks.remove(callback); signal.raise_signal(signal.SIGTERM)\n"
            "gc.callbacks.append(callback); gc.collect()\n"
            "print('went on')\n"
            "_startup.exit_if_signalled()\n"
            "print('never here')\n")
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, preexec_fn=_default_sigint_in_child)
    assert job.returncode == 143, job.stderr[-1000:]
    assert job.stdout.split() == ["went", "on"]
    assert job.stderr.count("Stopped by SIGTERM while starting") == 1
    assert "Exception ignored" not in job.stderr and "Traceback" not in job.stderr


def test_inside_a_keras_loop_a_signal_waits_for_the_end_of_the_batch(default_sigint):
    # Raising inside TensorFlow's loop (its iterators, a second signal during the unwind)
    # once ended in "free(): invalid next size" (exit -6): inside fit/evaluate/predict the
    # handler only notes the signal, and StopOnSignal raises it when the batch ends.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    seen = []

    class SignalDuringBatch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler has run: nothing was raised here
                seen.append(batch)

    x = np.zeros((64, 2), "float32")
    with pytest.raises(KeyboardInterrupt):
        with runs.interrupt_handling(sigterm=False):
            model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0,
                      callbacks=[SignalDuringBatch(), runs.StopOnSignal()])
    assert seen == [1]  # the batch ran to its end; the loop stopped after it
    assert runs._in_keras_loop == [0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_keras_loop_that_failed_leaves_ctrl_c_immediate_afterwards(default_sigint):
    # Keras calls no on_*_end when a loop raises: the loop count must not outlive it, or a
    # later Ctrl-C outside any loop would only be noted.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")

    class Fails(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("a failing callback")

    x = np.zeros((16, 2), "float32")
    with pytest.raises(RuntimeError):
        with runs.interrupt_handling(sigterm=False):
            model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0,
                      callbacks=[runs.StopOnSignal(), Fails()])
    assert runs._in_keras_loop == [0]  # reset when the block ended
    model.predict(x, verbose=0, callbacks=[runs.StopOnSignal()])  # no handling: counts nothing
    assert runs._in_keras_loop == [0]
    with pytest.raises(KeyboardInterrupt):
        with runs.interrupt_handling(sigterm=False):
            assert runs._in_keras_loop == [0]
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # raised here, at once: not only noted
            pytest.fail("Ctrl-C outside a Keras loop was only noted")
