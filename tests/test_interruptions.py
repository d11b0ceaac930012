"""Real interruptions of the training job: SIGKILL and SIGINT at chosen points, two
jobs on one folder, a full disk. Each time the rerun must go on from the step that
was interrupted and end as the uninterrupted run did.

The killed jobs are subprocesses (tests/interrupt_child.py kills itself at an exact
point); the reruns run in this process, which has TensorFlow loaded already.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from capslib import runs
from capslib.__main__ import main
from capslib.config import config_for_profile
from capslib.runs import read_log
from capslib.train import train

pytestmark = pytest.mark.heavy

TINY = dict(epochs=2, batch_size=16, train_limit=48, val_size=20, test_limit=20)
FLAGS = ["--epochs", "2", "--batch-size", "16", "--train-limit", "48", "--val-size", "20",
         "--test-limit", "20"]
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CAPSLIB_PROFILE": "quick", "TF_CPP_MIN_LOG_LEVEL": "3",
       "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
TIMING = {"epoch_seconds", "train_images_per_s"}  # the only columns allowed to differ


def default_sigint():
    """In the child, before Python starts: Ctrl-C as in a terminal. A test run started in
    the background by a shell (`cmd &`) ignores SIGINT, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def config():
    return config_for_profile("quick", **TINY)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same seeded run, never interrupted: its log and metrics."""
    run = tmp_path_factory.mktemp("reference") / "run"
    metrics = train(config(), run, verbose=0)
    return read_log(run / "log.csv"), metrics


def assert_same_run(run, metrics, reference):
    log, expected = reference
    got = read_log(run / "log.csv")
    assert got["epoch"] == log["epoch"] == [0, 1]
    for key in set(log) - TIMING:  # within floating-point noise
        np.testing.assert_allclose(got[key], log[key], rtol=1e-4, err_msg=key)
    for key in ("best_epoch", "epochs", "confusion_matrix", "val_accuracy", "test_accuracy"):
        assert metrics[key] == expected[key], key
    # Nothing half done is left: no backup, no temporary file.
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock", "best.keras", "config.json", "learning_curves.png", "log.csv",
        "metrics.json", "reconstructions.png", "state.json"]


def assert_resumable(run):
    """What a killed job leaves: whole files only, a state to resume from."""
    if (run / "best.keras").exists():
        assert zipfile.is_zipfile(run / "best.keras")
    state = runs.RunFolder(run).read_state()
    if state and state.backup:
        assert zipfile.is_zipfile(run / state.backup)
    read_log(run / "log.csv")
    assert not (run / "metrics.json").exists()


def test_killed_at_chosen_points_it_ends_as_if_never_interrupted(tmp_path, reference):
    run = tmp_path / "run"
    steps = [
        ("saving-epoch-1", signal.SIGKILL),       # while epoch 1's model file is written
        ("after-epoch-1-kept", signal.SIGKILL),   # right after the checkpoint of epoch 1
        ("mid-epoch-2", signal.SIGINT),           # Ctrl-C in the middle of epoch 2
        ("evaluating-test-set", signal.SIGKILL),  # training done, test set half evaluated
        ("writing-figures", signal.SIGKILL),      # metrics not written yet
    ]
    for point, sig in steps:
        done = subprocess.run(
            [sys.executable, str(REPO / "tests" / "interrupt_child.py"), str(run), point,
             sig.name[3:], json.dumps(TINY)], env=ENV, capture_output=True, text=True,
            timeout=300, preexec_fn=default_sigint)
        assert done.returncode == -sig, f"{point}: {done.stderr[-3000:]}"
        assert_resumable(run)
    metrics = train(config(), run, verbose=0)  # the last rerun finishes the job
    # Epoch 1 was begun twice because its first try was killed before it was kept,
    # epoch 2 because Ctrl-C stopped it; a kept epoch was never trained again.
    assert (tmp_path / "epochs_begun.txt").read_text().split() == ["0", "0", "1", "1"]
    assert_same_run(run, metrics, reference)


def wait_for(condition, timeout=240):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def lock_holder(run):
    try:
        return json.loads((run / ".lock").read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


def test_a_second_job_is_refused_and_ctrl_c_on_the_command_line_resumes(
        tmp_path, reference, capsys):
    run = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "capslib", "train", "--run-dir", str(run),
                            "--verbose", "0", *FLAGS], env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        wait_for(lambda: lock_holder(run) == job.pid)
        # A second job on the same folder: refused at once, naming the first one.
        assert main(["train", "--run-dir", str(run), *FLAGS]) == 1
        err = capsys.readouterr().err
        assert f"is in use by another job: pid {job.pid}" in err and "Traceback" not in err
        # Ctrl-C once epoch 1 is kept (during epoch 2 or the evaluation).
        wait_for(lambda: len(read_log(run / "log.csv").get("epoch", [])) == 1)
        job.send_signal(signal.SIGINT)
        out, err = job.communicate(timeout=240)
    finally:
        job.kill()
    assert job.returncode == 130, err[-3000:]
    assert "Interrupted (run the same command again" in err and "Traceback" not in err
    # One header, one row per epoch: the second job wrote nothing.
    headers = [line for line in (run / "log.csv").read_text().splitlines()
               if line.startswith("epoch,")]
    assert len(headers) == 1
    metrics = train(config(), run, verbose=0)
    assert_same_run(run, metrics, reference)


def test_a_full_disk_stops_with_a_message_and_the_run_goes_on_later(
        tmp_path, reference, monkeypatch):
    run = tmp_path / "run"
    save = keras.Model.save

    def disk_full_at_epoch_2(model, path, *args, **kwargs):
        if "epoch-2" in str(path):
            Path(path).write_bytes(b"PK\x03\x04" + bytes(1000))  # what fitted on the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(model, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", disk_full_at_epoch_2)
    with pytest.raises(runs.DiskFull, match="No space left .* run the same command again"):
        train(config(), run, verbose=0)
    state = runs.RunFolder(run).read_state()
    assert state.epochs_done == 1 and state.backup == "backup/epoch-1.keras"
    assert os.listdir(run / "backup") == ["epoch-1.keras"]  # the last good backup, whole
    assert_resumable(run)

    monkeypatch.setattr(keras.Model, "save", save)  # space freed
    metrics = train(config(), run, verbose=0)
    assert_same_run(run, metrics, reference)


def child(run, point, sig, timeout=300):
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "interrupt_child.py"), str(run), point,
         sig.name[3:], json.dumps(TINY)], env=ENV, capture_output=True, text=True,
        timeout=timeout, preexec_fn=default_sigint)


def test_sigterm_and_ctrl_c_while_the_best_model_loads_stop_the_command(tmp_path, reference):
    # Before: of 9 Ctrl-C, 4 were swallowed by Keras (exit 0), 2 gave a traceback;
    # SIGTERM ended the job with 143 and no word.
    run = tmp_path / "run"
    for sig, code, text in [(signal.SIGTERM, 143, "Stopped by SIGTERM"),
                            (signal.SIGINT, 130, "Interrupted")]:
        done = child(run, "loading-best", sig)
        assert done.returncode == code, done.stderr[-3000:]
        assert f"{text} (run the same command again: it goes on from there)." in done.stderr
        assert "Traceback" not in done.stderr and "unreadable" not in done.stderr
        assert_resumable(run)  # training is kept, the test set not evaluated
        assert runs.RunFolder(run).read_state().epochs_done == 2
    metrics = train(config(), run, verbose=0)
    assert_same_run(run, metrics, reference)


def test_a_damaged_state_mid_run_is_rebuilt_and_ends_as_if_never_interrupted(
        tmp_path, reference, capsys):
    # Before: `{}` in state.json made the rerun delete backup/epoch-1.keras and
    # train epoch 1 again (exit 0, no word).
    run = tmp_path / "run"
    done = child(run, "mid-epoch-2", signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    (run / "state.json").write_text("{}")
    metrics = train(config(), run, verbose=0)
    assert "rebuilt from backup/epoch-1.keras and log.csv (1 epochs kept" in \
        capsys.readouterr().err
    # Epoch 1 was trained once (by the killed job), epoch 2 twice (killed, then resumed).
    assert (tmp_path / "epochs_begun.txt").read_text().split() == ["0", "1"]
    assert_same_run(run, metrics, reference)


class PoisonConv1(keras.callbacks.Callback):
    """conv1 goes NaN during epoch 2 (ReLU hides it: the validation loss stays finite)."""

    def on_train_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() > 3:  # 3 steps per epoch
            kernel = self.model.weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_nan_weights_stop_the_job_keeping_the_last_good_epoch(tmp_path, capsys):
    # Before: training went on for every epoch, the NaN model was selected and tested.
    run = tmp_path / "run"
    with pytest.raises(runs.NonFinite, match=r"epoch 2: training diverged \(.*not finite\)"
                       r".*Epochs 1 to 1 are kept"):
        train(config(), run, verbose=0, callbacks=[PoisonConv1()])
    state = runs.RunFolder(run).read_state()
    assert state.epochs_done == 1 and state.best_epoch == 1
    assert os.listdir(run / "backup") == ["epoch-1.keras"]
    assert not (run / "metrics.json").exists()


class CtrlCAtEpoch2(keras.callbacks.Callback):
    """A real SIGINT to this process at the first batch of epoch 2 (a notebook's or a
    script's train() call, not the command line)."""

    def on_train_batch_begin(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() == 3:  # 3 steps per epoch
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def ctrl_c_default():
    """Ctrl-C as in a terminal or a notebook (a test run started with `cmd &` ignores it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_without_config_and_state_another_seed_is_refused_by_the_log(tmp_path, reference,
                                                                       capsys, ctrl_c_default):
    # Before: with config.json and state.json both gone, --seed 7 resumed the run (it draws
    # another validation split and other batches), exit 0.
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as caught:  # train() from Python: a plain Ctrl-C
        train(config(), run, verbose=0, callbacks=[CtrlCAtEpoch2()])
    assert type(caught.value) is KeyboardInterrupt and "goes on" in str(caught.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # never taken from Python
    (run / "config.json").unlink()
    (run / "state.json").unlink()
    (run / "best.keras").write_bytes((run / "backup" / "epoch-1.keras").read_bytes()[:-1])

    def files():
        return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
                for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    before = files()
    assert main(["train", "--profile", "quick", "--run-dir", str(run), *FLAGS,
                 "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with another recipe: config.json and state.json are gone" in err
    assert "--seed or --val-size draws another split" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # the refusal alone, not the rebuild's note
    assert files() == before  # nothing written, best.keras (cut short here) not repaired
    # The run's own recipe resumes (its seed reproduces the logged validation scores);
    # what the folder cannot prove is named.
    assert main(["train", "--profile", "quick", "--run-dir", str(run), *FLAGS]) == 0
    err = capsys.readouterr().err
    assert "rebuilt from backup/epoch-1.keras" in err  # (and best.keras copied again)
    assert "log.csv and the last backup confirm the learning rate, batch size, seed" in err
    assert "but not --train-limit, --augment, --test-limit, --mixed-precision" in err
    assert_same_run(run, json.loads((run / "metrics.json").read_text()), reference)


class StopAfterEpoch1(keras.callbacks.Callback):
    """Ends training after epoch 1 as the time budget does."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_a_rebuilt_state_keeps_an_early_stop(tmp_path, monkeypatch, capsys):
    # Before: a state rebuilt after the time budget had stopped training (killed during the
    # evaluation, state.json then damaged) trained on to --epochs.
    run = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr("capslib.train.evaluate_model", killed)
        with pytest.raises(KeyboardInterrupt):
            train(config(), run, verbose=0, callbacks=[StopAfterEpoch1()])
    assert runs.RunFolder(run).read_state().stopped_early
    assert read_log(run / "log.csv")["stopped_early"] == [1.0]
    (run / "state.json").write_text("{}")
    metrics = train(config(), run, verbose=0)
    assert "1 epochs kept, best epoch 1, training stopped early" in capsys.readouterr().err
    assert metrics["epochs"] == 1 and read_log(run / "log.csv")["epoch"] == [0]


def test_the_notebook_interrupt_button_during_train_then_the_same_cell_goes_on(tmp_path,
                                                                              reference):
    # A student in JupyterLab presses "Interrupt the kernel" during 06's training cell,
    # then runs the cell again (what 06 tells them to do).
    from jupyter_client.manager import start_new_kernel
    run = tmp_path / "run"
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(REPO), env=ENV)

    def execute(code, interrupt_when=None):
        """The cell's (error name and value, printed text); interrupts once the condition holds."""
        msg_id, error, text = kc.execute(code), None, ""
        while True:
            if interrupt_when and interrupt_when():
                km.interrupt_kernel()
                interrupt_when = None
            try:
                msg = kc.get_iopub_msg(timeout=0.1)
            except Exception:  # queue.Empty: nothing yet
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                return error, text
            if kind == "error":
                error = (content["ename"], content["evalue"])
            if kind == "stream":
                text += content["text"]

    def in_epoch_2():
        state = run / "state.json"
        return state.exists() and json.loads(state.read_text()).get("epochs_done") == 1
    try:
        assert execute(
            "import time, keras\n"
            "from capslib.config import config_for_profile\n"
            "from capslib.train import train\n"
            f"config = config_for_profile('quick', **{TINY!r})\n"
            "class SlowEpoch2(keras.callbacks.Callback):  # time to press the button\n"
            "    def on_train_batch_end(self, batch, logs=None):\n"
            "        if self.model.optimizer.iterations.numpy() > 3:\n"
            "            time.sleep(2)\n")[0] is None
        cell = f"metrics = train(config, {str(run)!r}, verbose=0{{}})\nprint(metrics['epochs'])"
        error, _ = execute(cell.format(", callbacks=[SlowEpoch2()]"), interrupt_when=in_epoch_2)
        assert error[0] == "KeyboardInterrupt" and "goes on from the last kept step" in error[1]
        assert_resumable(run)
        error, text = execute(cell.format(""))
        assert error is None and f"Resuming {run} after epoch 1 of 2." in text, text
        assert text.endswith("\n2\n")
        assert_same_run(run, json.loads((run / "metrics.json").read_text()), reference)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
