"""The run folder: a lock, atomic writes and the state that makes resuming exact.

A job may be killed at any instant (Ctrl-C, SIGKILL, a full disk, a power
cut), so every file a run keeps is written to a temporary file in the same
folder and then renamed over the old one: a reader sees the old file or the
new one, never half of one. ``state.json`` is the commit record: an epoch is
kept from the moment ``state.json`` names it, and every other file (the
backup, ``best.keras``, ``log.csv``) is brought in line with it when the job
starts again. Nothing is trusted unchecked: ``state.json`` holds the SHA-256
of each model file and the recipe, every file it names is verified before
anything is removed, ``best.keras`` is a copy (never a link) of the best
epoch's backup, and a damaged state is rebuilt from what the folder proves
(``RunFolder.rebuild_state``) or refused with nothing removed. Keras' ``ModelCheckpoint``, ``BackupAndRestore`` and
``CSVLogger`` write in place and ``BackupAndRestore`` deletes its backup as
soon as ``fit`` returns, before the test evaluation; hence this module.
"""
import contextlib
import csv
import dataclasses
import datetime
import errno
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np

from capslib.data import file_sha256

try:
    import fcntl
except ImportError:  # Windows: no lock (the course targets Linux and macOS)
    fcntl = None

LOCK_NAME = ".lock"
TEMP_PREFIX = ".tmp-"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class RunError(Exception):
    """The run folder cannot be used as it is; the message says what to do."""


class RunInUse(RunError):
    """Another job holds the run folder's lock."""


class DiskFull(RunError):
    """A write failed for lack of space; what was kept before is intact."""


class StateDamaged(RunError):
    """``state.json`` cannot be trusted as it is (unreadable, wrong types, inconsistent)."""


class NonFinite(RunError):
    """Training produced a non-finite loss or weights; the epoch was not kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; ``signum`` says which (the CLI exits 128 + signum)."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(f"{signal.Signals(signum).name}: stopped with every kept file whole; "
                         "the same command or call goes on from the last kept step")
        self.signum = int(signum)


# -- signals: Ctrl-C and SIGTERM alike, even where Keras swallows them -------------------

_received = []  # the signals received since interrupt_handling() began
_depth = [0]  # nested interrupt_handling() (the command line around train()): one owner
_in_keras_loop = [0]  # Keras loops (fit, evaluate, predict) under way with StopOnSignal


def _on_signal(signum, frame):
    _received.append(signum)
    if _in_keras_loop[0]:
        # An exception raised at an arbitrary point inside a Keras loop can interrupt
        # TensorFlow's own clean-up (its data iterators, a second signal mid-unwind),
        # which once ended in "free(): invalid next size" (exit -6). Inside a loop the
        # signal is only noted; StopOnSignal raises it at the end of the current batch.
        if len(_received) == 1:
            os.write(2, b"\nStopping after the current batch (every kept file stays whole)...\n")
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupt_handling(sigterm=True, restore=True):
    """SIGINT (and SIGTERM) raise ``Interrupted`` and are remembered.

    Python runs the handler wherever the main thread is, and some places
    swallow what it raises: Keras' model loading and saving (a bare
    ``except:``), JAX's garbage-collector callback. ``check_interrupted()``
    after such calls, after every batch (``StopOnSignal``) and when the block
    ends raises it again, so no signal is lost. Files are left whole.

    ``sigterm=True`` (the command line): SIGTERM (``docker stop``, a scheduler)
    is handled like Ctrl-C. ``sigterm=False`` (``train()`` called from Python):
    SIGTERM keeps its default, and Ctrl-C leaves the block as a plain
    ``KeyboardInterrupt``, which Python reports as it always does. Nested
    blocks (the command line around ``train()``) share the outer block's handling.
    ``restore=False`` (the command line, which exits next): afterwards the
    signals are ignored (SIG_IGN lasts through Python's shutdown, a Python
    handler would not), so a second Ctrl-C, or one while Python shuts down,
    cannot interrupt the last line or print a traceback.
    """
    if not _in_main_thread():
        yield
        return
    if _depth[0]:
        _depth[0] += 1
        try:
            yield
        finally:
            _depth[0] -= 1
        return
    from capslib import _startup
    del _received[:]
    _in_keras_loop[0] = 0  # a loop that ended by an exception earlier left no count behind
    # Only where the default is in place (or the start-up handler of `python -m
    # capslib`): a job started with SIGINT ignored (`cmd &` in a script) keeps
    # ignoring it, a handler someone else installed stays.
    defaults = {signal.SIGINT: signal.default_int_handler}
    if sigterm:
        defaults[signal.SIGTERM] = signal.SIG_DFL
    previous = {}
    for sig, default in defaults.items():
        handler = signal.getsignal(sig)
        if handler is default or _startup.is_startup_handler(handler):
            signal.signal(sig, _on_signal)
            previous[sig] = default
    _startup.quiet_unraisable(Interrupted)
    _depth[0] = 1
    try:
        yield
        check_interrupted()  # a signal swallowed after the last check
    except Interrupted as e:
        if sigterm:
            raise
        # Python reports only a KeyboardInterrupt itself as a Ctrl-C (exit by SIGINT).
        raise KeyboardInterrupt(str(e)) from None
    finally:
        _depth[0] = 0
        _in_keras_loop[0] = 0
        for sig, handler in previous.items():
            signal.signal(sig, handler if restore else signal.SIG_IGN)
        del _received[:]


def _in_main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


def check_interrupted():
    """Raise ``Interrupted`` if a signal came during a call that swallowed it (or, inside
    a Keras loop with ``StopOnSignal``, one that was only noted)."""
    if _received:
        _in_keras_loop[0] = 0  # the exception leaves every loop
        raise Interrupted(_received[-1])


class StopOnSignal(keras.callbacks.Callback):
    """Stops a Keras loop at the end of the batch during which Ctrl-C or SIGTERM came.

    While the loop runs (``fit`` with its validation, ``evaluate``, ``predict``) the
    signal handler of ``interrupt_handling`` only notes the signal: raising it at an
    arbitrary point inside TensorFlow is not safe. Then at each batch's end (and each
    epoch's start) ``check_interrupted()`` raises ``Interrupted``; so does a signal a
    Keras or JAX call swallowed. A loop that ends by another exception leaves signals
    noted until the next check (the next batch, or the end of ``interrupt_handling``); a
    signal noted then gives way to that exception. Outside ``interrupt_handling`` it only
    checks. A batch that hangs is not interrupted: SIGKILL (``kill -9``) stops it, and the
    run folder still holds every epoch kept before.
    """

    def _begin(self, logs=None):
        if _depth[0]:  # only inside interrupt_handling, which resets the count when it ends
            _in_keras_loop[0] += 1
        check_interrupted()

    def _end(self, logs=None):
        if _depth[0]:
            _in_keras_loop[0] = max(0, _in_keras_loop[0] - 1)
        check_interrupted()

    on_train_begin = on_test_begin = on_predict_begin = _begin
    on_train_end = on_test_end = on_predict_end = _end

    def on_train_batch_end(self, batch, logs=None):
        check_interrupted()

    on_test_batch_end = on_predict_batch_end = on_train_batch_end

    def on_epoch_begin(self, epoch, logs=None):
        check_interrupted()


def shown_path(path):
    """``path`` as a message shows it: relative to the working folder when close to it (a
    notebook's ``../runs/...``), so stored outputs hold no machine's absolute path."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith(os.path.join("..", "..")) else relative


# -- atomic writes ---------------------------------------------------------------


def _fsync_dir(folder):
    # Makes the rename itself durable; not possible (nor needed) everywhere.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the file's extension (Keras and Matplotlib choose
    the format from it). On any error, Ctrl-C included, the temporary file is
    removed and ``path`` is left as it was; a full disk becomes ``DiskFull``.
    """
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        check_interrupted()  # a save that swallowed Ctrl-C may have written half a file
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise DiskFull(
                f"No space left on the disk of {path.parent} while writing {path.name}. "
                "Nothing kept so far is lost: free some space and run the same command "
                "again; it goes on from the last finished step.") from e
        if isinstance(e, OSError) and not isinstance(e, RunError):
            raise os_error(e, path) from e
        raise
    _fsync_dir(path.parent)


# What to do about an OS error, by errno (a full disk is DiskFull).
_OS_ADVICE = {
    errno.EEXIST: "a file is in the way of a folder: choose another {flag}",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another {flag}",
    errno.EISDIR: "it is a folder where a file is expected: move it away",
    errno.EACCES: "no permission to write there: choose a folder you can write to "
                  "({flag}), or change its permissions",
    errno.EPERM: "no permission to write there: choose a folder you can write to ({flag})",
    errno.EROFS: "the file system is read-only: copy the folder to a writable disk, or "
                 "choose another {flag}",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter {flag}",
}


def os_error(e, path=None, flag="--run-dir"):
    """An ``OSError`` as a one-line ``RunError`` naming the path and what to do."""
    if isinstance(e, RunError):
        return e
    if e.errno in _DISK_FULL:
        return DiskFull(f"No space left on the disk of {path or e.filename}. Nothing kept so "
                        "far is lost: free some space and run the same command again.")
    where = e.filename or path
    advice = _OS_ADVICE.get(e.errno, "check the path and its permissions").format(flag=flag)
    return RunError(f"{where}: {e.strerror or e}; {advice}.")


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json_atomic(path, obj):
    # NumPy scalars (a setting given as np.int64, say) are written as numbers.
    text = json.dumps(obj, indent=2, default=lambda x: x.item() if hasattr(x, "item") else str(x))
    write_text_atomic(path, text + "\n")


# -- the lock --------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run folder while a job uses it (``with RunLock(d):``).

    Built on ``flock``: the kernel releases it when the process ends, however
    it ends, so the lock a killed job leaves behind is stale by construction
    and is taken over. The file names the holder, for the refusal message.
    """

    def __init__(self, run_dir, flag="--run-dir", read_only_ok=False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.flag = flag
        self.read_only_ok = read_only_ok  # a finished run is only read: no lock needed
        self._fd = None

    def __enter__(self):
        if fcntl is None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if self.read_only_ok and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return self
            raise os_error(e, self.path, self.flag) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunInUse(
                f"{self.run_dir} is in use by another job: {_describe(holder)}. Wait for it "
                f"to end (or stop it), or use another {self.flag}.") from None
        except OSError as e:  # a filesystem without locks (some network mounts)
            os.close(fd)
            print(f"{self.run_dir}: cannot be locked ({e.strerror}); make sure no other job "
                  "uses it.", file=sys.stderr)
            return self
        previous = _read_holder(fd)
        if previous.get("pid") not in (None, os.getpid()):
            print(f"{self.run_dir}: taking over the lock left by {_describe(previous)}, "
                  "which is no longer running.")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _read_holder(fd):
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder):
    if not holder.get("pid"):
        return "a process that did not say which"
    text = f"pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}"
    return text + (f" ({holder['command']})" if holder.get("command") else "")


# -- state and the files derived from it ---------------------------------------------


@dataclasses.dataclass
class RunState:
    """Where a run stands; ``state.json`` is rewritten after each kept epoch."""

    epochs_done: int = 0
    backup: str | None = None  # model + optimizer after the last kept epoch (relative path)
    best_epoch: int | None = None  # 1-based, as in messages and metrics.json
    best_val_loss: float | None = None
    # Training ended for good before the last epoch (an early stop on validation loss,
    # --time-budget-action finish, a callback); log.csv's last row says so too. A pause
    # (the time budget's default) is not an end: it records nothing, as a kill between
    # epochs, and the next session trains on.
    stopped_early: bool = False
    history: list = dataclasses.field(default_factory=list)  # one dict per epoch (log.csv)
    # SHA-256 of each model file kept (backups, best.keras): a file changed or
    # replaced after it was kept is found before it is used or anything is removed.
    sha256: dict = dataclasses.field(default_factory=dict)
    recipe: dict | None = None  # config.json's settings: deleting config.json keeps them
    backends: list = dataclasses.field(default_factory=list)  # Keras backends, in order used


# Keys every state.json has had; the others were added later and have defaults.
_REQUIRED = ("epochs_done", "backup", "best_epoch", "history")
_BACKUP_NAME = re.compile(r"epoch-([1-9][0-9]*)\.keras")


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _state_problem(saved):
    """What is wrong with the JSON of a state.json (None: a state this capslib wrote)."""
    if not isinstance(saved, dict):
        return f"a {type(saved).__name__}, not an object"
    fields = {f.name for f in dataclasses.fields(RunState)}
    if set(saved) - fields:
        return f"unknown keys {sorted(set(saved) - fields)}"
    missing = [k for k in _REQUIRED if k not in saved]
    if missing:
        return f"no {', '.join(missing)}"
    done = saved["epochs_done"]
    if not _is_int(done) or done < 0:
        return f"epochs_done {done!r} is not a count of epochs"
    if saved["backup"] not in (None, f"backup/epoch-{done}.keras"):
        return f"backup {saved['backup']!r} is not the backup of epoch {done}"
    best = saved["best_epoch"]
    if best is not None and not (_is_int(best) and 1 <= best <= done):
        return f"best_epoch {best!r} is not one of the {done} epochs"
    loss = saved.get("best_val_loss")
    if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
        return f"best_val_loss {loss!r} is not a number"
    if not isinstance(saved.get("stopped_early", False), bool):
        return "stopped_early is not true or false"
    history = saved["history"]
    if not (isinstance(history, list) and all(isinstance(r, dict) and _is_int(r.get("epoch"))
                                              and 0 <= r["epoch"] < done for r in history)):
        return "history is not a list of epochs' rows"
    sums = saved.get("sha256", {})
    if not (isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())):
        return "sha256 is not a table of checksums"
    if not isinstance(saved.get("recipe") or {}, dict):
        return "recipe is not an object"
    backends = saved.get("backends", [])
    if not (isinstance(backends, list) and all(isinstance(b, str) for b in backends)):
        return "backends is not a list of names"
    return None


def saved_steps(path):
    """The optimizer's step count stored in a ``.keras`` file (None if it has none).

    A backup of epoch N was saved after N * steps_per_epoch steps: this is how
    a file proves which epoch it holds when no checksum says so.
    """
    import h5py
    with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            return None
        with archive.open("model.weights.h5") as member:
            with h5py.File(io.BytesIO(member.read()), "r") as weights:
                steps = weights.get("optimizer/vars/0")
                if steps is None or steps.shape != () or steps.dtype.kind not in "iu":
                    return None
                return int(steps[()])


class RunFolder:
    """The files of one run and the order in which they are kept."""

    def __init__(self, path, flag="--run-dir"):
        self.path = Path(path)
        self.flag = flag  # the option that names the folder, for messages
        self.config_path = self.path / "config.json"
        self.state_path = self.path / "state.json"
        self.log_path = self.path / "log.csv"
        self.best_path = self.path / "best.keras"
        self.metrics_path = self.path / "metrics.json"
        self.backup_dir = self.path / "backup"
        self.rebuild_note = None  # what rebuild_state() did, if it did

    def lock(self):
        """The folder's lock, the folder made first; an OS error is one line."""
        if str(self.path) == "":
            raise RunError(f"{self.flag} '': give a folder (or leave the option out).")
        try:
            if self.path.exists() and not self.path.is_dir():
                raise RunError(f"{self.path}: a file, not a folder; choose another {self.flag}.")
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, self.path, self.flag) from None
        return RunLock(self.path, flag=self.flag,
                       read_only_ok=self.metrics_path.is_file())

    def read_json(self, path, what):
        """The JSON in ``path`` or None if absent; RunError if it cannot be read."""
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise RunError(f"{path} is damaged ({str(e)[:100]}); it holds {what}. Restore it, "
                           f"or move the folder {self.path} away to start over.") from None
        except OSError as e:
            raise os_error(e, path, self.flag) from None

    def read_state(self):
        """The saved state, None if there is none; ``StateDamaged`` if it is not whole."""
        if not self.state_path.exists():
            return None
        try:
            saved = json.loads(self.state_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise StateDamaged(f"{self.state_path} is damaged (not JSON: {str(e)[:80]})") from None
        except OSError as e:
            raise os_error(e, self.state_path, self.flag) from None
        problem = _state_problem(saved)
        if problem:
            raise StateDamaged(f"{self.state_path} is damaged ({problem})")
        return RunState(**saved)

    def contradiction(self, state, epochs):
        """Why ``state`` (of a run not finished, ``epochs`` planned) contradicts the
        folder (None: it does not).

        A run that trains on needs the backup of its last epoch; log.csv is written
        after state.json, so log rows beyond the state's epochs and their backup mean
        the state was rolled back or edited, not interrupted.
        """
        trains_on = state.epochs_done < epochs and not state.stopped_early
        if state.epochs_done and not state.backup and trains_on:
            return (f"{self.state_path} names no backup after {state.epochs_done} epochs "
                    "(resuming would start from fresh weights)")
        try:
            logged = len(read_log(self.log_path).get("epoch", []))
        except RunError:
            return None
        later = [e for e in self._backups() if state.epochs_done < e <= logged]
        if later:
            return (f"{self.state_path} says {state.epochs_done} epochs, but log.csv and "
                    f"backup/ hold epoch {max(later)}")
        return None

    def kept_files(self):
        """What the folder holds of a run in progress (for messages)."""
        kept = [p.name for p in (self.best_path, self.backup_dir) if p.exists()]
        try:
            if read_log(self.log_path).get("epoch"):
                kept.append(self.log_path.name)
        except RunError:
            kept.append(self.log_path.name)
        return kept

    def check_no_older_progress(self):
        """A run without state.json must not hold progress we would overwrite."""
        kept = self.kept_files()
        if kept:
            raise RunError(
                f"{self.path} holds {', '.join(kept)} but no state.json: it was started by an "
                f"older capslib or damaged, and cannot be resumed safely. Use another {self.flag}, "
                "or move that folder away to start over.")

    # -- checking what a state names, before anything is removed ----------------------

    def check_model_file(self, relative, epoch, steps_per_epoch, sha256=None):
        """Why the model file ``relative`` is not the one of ``epoch`` (None: it is).

        With a checksum the file must be the very one written; without one (a
        state of an older capslib, a rebuilt state) it must be a whole archive
        whose optimizer has taken ``epoch * steps_per_epoch`` steps.
        """
        path = self.path / relative
        if not path.is_file():
            return "missing"
        try:
            if sha256:
                found = file_sha256(path)
                return None if found == sha256 else (
                    f"changed since epoch {epoch} kept it (SHA-256 {found[:12]}..., state.json "
                    f"says {sha256[:12]}...)")
            if not zipfile.is_zipfile(path):
                return "not a Keras model file (not a zip archive)"
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad:
                return f"damaged ({bad} fails its CRC check)"
            steps = saved_steps(path)
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, KeyError) as e:
            return f"unreadable ({type(e).__name__}: {str(e)[:100]})"
        if steps is not None and steps_per_epoch and steps != epoch * steps_per_epoch:
            return (f"holds the model after {steps} training steps, not epoch {epoch} "
                    f"({epoch * steps_per_epoch} steps)")
        return None

    def verify(self, state, steps_per_epoch):
        """Check every file ``state`` names; repair ``best.keras`` from its backup.

        Runs before anything in the folder is removed or rewritten. Raises
        RunError, naming the file and what to do, if a file the run needs is
        missing, damaged or not of its epoch.
        """
        sums = state.sha256
        if state.backup:
            why = self.check_model_file(state.backup, state.epochs_done, steps_per_epoch,
                                        sums.get(state.backup))
            if why:
                others = sorted(e for e in self._backups() if e != state.epochs_done)
                back = (f"delete {self.state_path} to go back to epoch {others[-1]} (the last "
                        "epoch backup/ still holds), " if others else "")
                raise RunError(
                    f"{self.path / state.backup} cannot be read as the model and optimizer "
                    f"after epoch {state.epochs_done}, which state.json says it is ({why}). "
                    f"Nothing was removed. Restore it, or {back}or move {self.path} away to "
                    "start over.")
            sums.setdefault(state.backup, file_sha256(self.path / state.backup))
        if not state.best_epoch:
            return
        best_backup = self.best_backup(state)
        if best_backup and best_backup != state.backup:
            why = self.check_model_file(best_backup, state.best_epoch, steps_per_epoch,
                                        sums.get(best_backup))
            if why:
                print(f"{self.path / best_backup}: {why}; best.keras is then the only "
                      f"copy of epoch {state.best_epoch}.", file=sys.stderr)
                best_backup = None
                sums.pop(self.best_backup(state), None)
        recorded = sums.get(self.best_path.name)
        if recorded and best_backup is None:
            why = self.check_model_file(self.best_path.name, state.best_epoch, steps_per_epoch,
                                        recorded)
        elif recorded:  # the usual case: a quick comparison with its backup's checksum
            why = None if (self.best_path.is_file() and not _same_file(
                self.best_path, self.path / best_backup)
                and file_sha256(self.best_path) == recorded) else "changed since it was kept"
            if why and self.best_path.is_file():
                why = self.check_model_file(self.best_path.name, state.best_epoch,
                                            steps_per_epoch, recorded) or why
        elif best_backup is None:  # an older capslib's state: the file must prove its epoch
            why = self.check_model_file(self.best_path.name, state.best_epoch, steps_per_epoch)
            if why is None:
                sums[self.best_path.name] = file_sha256(self.best_path)
        else:  # written before best.keras was copied (or as a link): copied again
            why = ""
        if why is None:
            return
        if best_backup is None:
            raise RunError(
                f"{self.best_path}: {why}; it is the model of the best epoch "
                f"({state.best_epoch}) and the folder holds no other copy. Nothing was removed. "
                f"Restore it, or move the folder {self.path} away to start over.")
        if why:
            print(f"{self.best_path}: {why}; rebuilt from {best_backup}.", file=sys.stderr)
        self._copy_best(self.path / best_backup, sums[best_backup], state)

    def best_backup(self, state):
        """The backup of the best epoch, if the state keeps one (relative path)."""
        if not state.best_epoch:
            return None
        name = f"backup/epoch-{state.best_epoch}.keras"
        return name if name == state.backup or name in state.sha256 else None

    def _copy_best(self, source, digest, state):
        # A copy, never a link: writing best.keras in place must not touch the backup.
        with atomic_path(self.best_path) as tmp:
            shutil.copyfile(source, tmp)
        state.sha256[self.best_path.name] = digest

    def _backups(self):
        """{epoch: relative path} of the backup files present."""
        found = {}
        if self.backup_dir.is_dir():
            for p in self.backup_dir.iterdir():
                m = _BACKUP_NAME.fullmatch(p.name)
                if m:
                    found[int(m.group(1))] = f"backup/{p.name}"
        return found

    def rebuild_state(self, steps_per_epoch, damage=None, announce=True):
        """A state rebuilt from what the folder proves: a whole backup of epoch N
        and log.csv's rows of epochs 1..N. RunError (nothing removed) if it proves none.

        ``damage``: why state.json is not used (None: there is none). The one-line
        note saying so is printed (``announce``) or left in ``self.rebuild_note``
        for the caller to print once its own checks pass.
        """
        try:
            log = read_log(self.log_path)
            log_problem = None
        except RunError as e:
            log, log_problem = {}, str(e)
        rows = {}
        for k, epoch in enumerate(log.get("epoch", [])):
            rows[epoch] = {key: (epoch if key == "epoch" else values[k])
                           for key, values in log.items()}
        rejected = []
        for epoch, relative in sorted(self._backups().items(), reverse=True):
            if not all(e in rows for e in range(epoch)):
                rejected.append(f"{relative}: log.csv lacks its rows")
                continue
            why = self.check_model_file(relative, epoch, steps_per_epoch)
            if why:
                rejected.append(f"{relative}: {why}")
                continue
            return self._rebuilt(epoch, relative, [rows[e] for e in range(epoch)],
                                 steps_per_epoch, damage, announce)
        kept = self.kept_files()
        if not kept:
            if damage:  # nothing was kept: the damaged state held no progress
                raise RunError(f"{damage}. Restore it, or move the folder {self.path} away to "
                               "start over.")
            return RunState()
        reasons = "; ".join(rejected + ([log_problem] if log_problem else [])) or \
            "no backup of an epoch"
        if damage:
            raise RunError(
                f"{damage}, and the folder does not prove where the run stands ({reasons}). "
                f"Nothing was removed: restore state.json, or move the folder {self.path} away "
                "to start over.")
        raise RunError(
            f"{self.path} holds {', '.join(kept)} but no state.json: it was started by an "
            f"older capslib or damaged, and cannot be resumed safely ({reasons}). Use another "
            f"{self.flag}, or move that folder away to start over.")

    def _rebuilt(self, epoch, relative, rows, steps_per_epoch, damage, announce=True):
        # log.csv's last row says whether training ended for good (an early stop).
        stopped = bool(rows) and rows[-1].get("stopped_early") == 1
        state = RunState(epochs_done=epoch, backup=relative, history=rows, stopped_early=stopped)
        state.sha256[relative] = file_sha256(self.path / relative)
        finite = [(r.get("val_loss"), r["epoch"] + 1) for r in rows
                  if isinstance(r.get("val_loss"), float) and math.isfinite(r["val_loss"])]
        if finite:
            state.best_val_loss, state.best_epoch = min(finite)
            best_backup = self._backups().get(state.best_epoch)
            if best_backup and best_backup != relative and not self.check_model_file(
                    best_backup, state.best_epoch, steps_per_epoch):
                state.sha256[best_backup] = file_sha256(self.path / best_backup)
            elif state.best_epoch != epoch:
                why = self.check_model_file(self.best_path.name, state.best_epoch,
                                            steps_per_epoch)
                if why:
                    raise RunError(
                        f"{damage or self.state_path.name + ' is missing'}; backup/ and "
                        f"log.csv prove epochs 1 to {epoch}, but the best of them (epoch "
                        f"{state.best_epoch}) is not in {self.best_path} ({why}). Nothing "
                        f"was removed: restore state.json, or move {self.path} away to start "
                        "over.")
        self.rebuild_note = (
            f"{damage or self.state_path.name + ' is missing'}: rebuilt from {relative} and "
            f"log.csv ({epoch} epochs kept, best epoch {state.best_epoch}"
            f"{', training stopped early' if stopped else ''}).")
        if announce:
            print(self.rebuild_note, file=sys.stderr)
        return state

    # -- keeping -------------------------------------------------------------------------

    def remove_leftovers(self, state=None):
        """Temporary files of interrupted writes, and backups the state does not name."""
        for folder in (self.path, self.backup_dir):
            for tmp in folder.glob(f"{TEMP_PREFIX}*"):
                tmp.unlink(missing_ok=True)
        if self.backup_dir.exists():
            keep = set()
            if state:
                keep = {self.path / p for p in (state.backup, self.best_backup(state)) if p}
            for old in self.backup_dir.iterdir():
                if old not in keep:
                    old.unlink(missing_ok=True)

    def write_state(self, state):
        write_json_atomic(self.state_path, dataclasses.asdict(state))

    def keep_epoch(self, model, epoch, logs, state):
        """Keep a finished epoch; a kill at any point leaves a resumable folder.

        An epoch whose loss or weights are not finite is not kept: NonFinite.
        """
        row = {"epoch": epoch, **{k: _log_value(v) for k, v in logs.items()}}
        check_finite_epoch(model, epoch, row, self, state)
        self.backup_dir.mkdir(exist_ok=True)
        backup = self.backup_dir / f"epoch-{epoch + 1}.keras"
        try:
            with atomic_path(backup) as tmp:
                model.save(tmp)
                check_interrupted()
                digest = file_sha256(tmp)
        except DiskFull as e:
            raise DiskFull(f"{e} {space_needed(model, self.path)}") from None
        relative = str(backup.relative_to(self.path))
        val_loss = row.get("val_loss", math.nan)
        new_best = math.isfinite(val_loss) and (state.best_val_loss is None
                                                or val_loss < state.best_val_loss)
        if new_best:  # best.keras loses its checksum until it is the new best's copy
            state.best_epoch, state.best_val_loss = epoch + 1, val_loss
        kept = {k: v for k, v in state.sha256.items()
                if (k == self.best_path.name and not new_best) or k == self.best_backup(state)}
        state.epochs_done = epoch + 1
        state.backup = relative
        state.sha256 = {**kept, relative: digest}
        state.history = [r for r in state.history if r["epoch"] < epoch] + [row]
        self.write_state(state)  # the commit: from here on this epoch is kept
        try:
            self.sync_with_state(state, best_is_new=new_best)
        except DiskFull as e:
            raise DiskFull(f"{e} {space_needed(model, self.path)}") from None

    def sync_with_state(self, state, best_is_new=False):
        """Bring best.keras, log.csv and backup/ in line with a committed state."""
        if best_is_new and state.backup:
            self._copy_best(self.path / state.backup, state.sha256[state.backup], state)
            self.write_state(state)
        self.write_log(state.history)
        self.remove_leftovers(state)

    def write_log(self, rows):
        # Columns as Keras' CSVLogger writes them: epoch, then the sorted keys.
        keys = sorted({k for row in rows for k in row} - {"epoch"})
        with atomic_path(self.log_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", *keys])
            writer.writeheader()
            writer.writerows(rows)

    def remove_backup(self):
        if self.backup_dir.exists():
            for old in self.backup_dir.iterdir():
                old.unlink()
            self.backup_dir.rmdir()


def weights_finite(model):
    """Whether every weight of ``model`` is a finite number."""
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def check_finite_epoch(model, epoch, row, run=None, state=None):
    """NonFinite if the epoch's losses or the model's weights are NaN or infinite."""
    bad = [k for k, v in row.items() if "loss" in k and isinstance(v, float)
           and not math.isfinite(v)]
    if not bad and weights_finite(model):
        return
    what = f"{', '.join(bad)} not finite" if bad else "weights not finite"
    kept = ""
    if run is not None and state is not None:
        kept = (f" Epochs 1 to {state.epochs_done} are kept in {run.path} (best epoch "
                f"{state.best_epoch})." if state.epochs_done else " No epoch was kept.")
    raise NonFinite(
        f"epoch {epoch + 1}: training diverged ({what}); it stopped there and the epoch was not "
        f"kept.{kept} Start a new run (another --run-dir) with a lower --learning-rate.")


def space_needed(model, folder):
    """How much free space a run needs: 4 model files (a backup being written beside the
    last one, the best epoch's backup and best.keras), each weights + Adam's 2 moments."""
    size = 3 * 4 * model.count_params() + (1 << 20)
    try:
        free = shutil.disk_usage(folder).free
        have = f"; {free / 1e9:.2f} GB are free"
    except OSError:
        have = ""
    return f"This run needs about {4 * size / 1e9:.2f} GB free in {folder}{have}."


def _log_value(value):
    try:
        return float(value)
    except (TypeError, ValueError):  # a callback may log text
        return str(value)


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def read_log(path):
    """The CSV log as a dict of lists (last row wins for a repeated epoch).

    Tolerant of what an interrupted or doubled writer may leave: repeated
    headers and cut lines are skipped, missing values read as NaN. A file that
    is not text at all is a RunError (one line), not a traceback.
    """
    path = Path(path)
    if not path.exists():
        return {}
    rows = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    rows[int(row.get("epoch") or "")] = row
                except ValueError:
                    continue
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunError(f"{path} is damaged (not a CSV text file: {str(e)[:80]}); it is rewritten "
                       "from state.json when the run goes on, or restore it.") from None
    keys = sorted({k for row in rows.values() for k in row if k is not None},
                  key=lambda k: (k != "epoch", k))
    history = {}
    for epoch in sorted(rows):
        for key in keys:
            history.setdefault(key, []).append(_number(rows[epoch].get(key)))
    if "epoch" in history:
        history["epoch"] = [int(e) for e in history["epoch"]]
    return history


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


class EpochCheckpoint(keras.callbacks.Callback):
    """Keeps each finished epoch in the run folder (see ``RunFolder.keep_epoch``)."""

    def __init__(self, run, state):
        super().__init__()
        self.run, self.state = run, state

    def on_epoch_end(self, epoch, logs=None):
        self.run.keep_epoch(self.model, epoch, logs or {}, self.state)
