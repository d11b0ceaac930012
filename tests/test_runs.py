"""The run folder without training: lock, atomic writes, leftovers, bad input.

The interruptions of real training jobs are in test_interruptions.py.
"""
import errno
import json
import os
import subprocess
import sys

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
    with pytest.raises(ModelFileError, match="no such file .it is a folder"):
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
