"""The run folder: a lock, atomic writes and the state that makes resuming exact.

A job may be killed at any instant (Ctrl-C, SIGKILL, a full disk, a power
cut), so every file a run keeps is written to a temporary file in the same
folder and then renamed over the old one: a reader sees the old file or the
new one, never half of one. ``state.json`` is the commit record: an epoch is
kept from the moment ``state.json`` names it, and every other file (the
backup, ``best.keras``, ``log.csv``) is brought in line with it when the job
starts again. Keras' ``ModelCheckpoint``, ``BackupAndRestore`` and
``CSVLogger`` write in place and ``BackupAndRestore`` deletes its backup as
soon as ``fit`` returns, before the test evaluation; hence this module.
"""
import contextlib
import csv
import dataclasses
import datetime
import errno
import json
import math
import os
import shutil
import socket
import sys
from pathlib import Path

import keras

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
        raise
    _fsync_dir(path.parent)


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

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd = None

    def __enter__(self):
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunInUse(
                f"{self.run_dir} is in use by another job: {_describe(holder)}. Wait for it "
                "to end (or stop it), or use another --run-dir.") from None
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
    stopped_early: bool = False  # the time budget ended training before the last epoch
    history: list = dataclasses.field(default_factory=list)  # one dict per epoch (log.csv)


class RunFolder:
    """The files of one run and the order in which they are kept."""

    def __init__(self, path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.state_path = self.path / "state.json"
        self.log_path = self.path / "log.csv"
        self.best_path = self.path / "best.keras"
        self.metrics_path = self.path / "metrics.json"
        self.backup_dir = self.path / "backup"

    def lock(self):
        self.path.mkdir(parents=True, exist_ok=True)
        return RunLock(self.path)

    def read_json(self, path, what):
        """The JSON in ``path`` or None if absent; RunError if it cannot be read."""
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise RunError(f"{path} is damaged ({e}); it holds {what}. Restore it, or move "
                           f"the folder {self.path} away to start over.") from None

    def read_state(self):
        saved = self.read_json(self.state_path, "where the run stands")
        if saved is None:
            return None
        try:
            return RunState(**saved)
        except TypeError:
            raise RunError(f"{self.state_path} is not a state this capslib wrote. Move the "
                           f"folder {self.path} away to start over.") from None

    def check_no_older_progress(self):
        """A run without state.json must not hold progress we would overwrite."""
        kept = [p.name for p in (self.best_path, self.backup_dir) if p.exists()]
        if read_log(self.log_path).get("epoch"):
            kept.append(self.log_path.name)
        if kept:
            raise RunError(
                f"{self.path} holds {', '.join(kept)} but no state.json: it was started by an "
                "older capslib or damaged, and cannot be resumed safely. Use another --run-dir, "
                "or move that folder away to start over.")

    def remove_leftovers(self, state=None):
        """Temporary files of interrupted writes, and backups the state does not name."""
        for folder in (self.path, self.backup_dir):
            for tmp in folder.glob(f"{TEMP_PREFIX}*"):
                tmp.unlink(missing_ok=True)
        if self.backup_dir.exists():
            keep = self.path / state.backup if state and state.backup else None
            for old in self.backup_dir.iterdir():
                if old != keep:
                    old.unlink(missing_ok=True)

    def write_state(self, state):
        write_json_atomic(self.state_path, dataclasses.asdict(state))

    def keep_epoch(self, model, epoch, logs, state):
        """Keep a finished epoch; a kill at any point leaves a resumable folder."""
        row = {"epoch": epoch, **{k: _log_value(v) for k, v in logs.items()}}
        self.backup_dir.mkdir(exist_ok=True)
        backup = self.backup_dir / f"epoch-{epoch + 1}.keras"
        with atomic_path(backup) as tmp:
            model.save(tmp)
        val_loss = row.get("val_loss", math.nan)
        if math.isfinite(val_loss) and (state.best_val_loss is None
                                        or val_loss < state.best_val_loss):
            state.best_epoch, state.best_val_loss = epoch + 1, val_loss
        state.epochs_done = epoch + 1
        state.backup = str(backup.relative_to(self.path))
        state.history = [r for r in state.history if r["epoch"] < epoch] + [row]
        self.write_state(state)  # the commit: from here on this epoch is kept
        self.sync_with_state(state)

    def sync_with_state(self, state):
        """Bring best.keras, log.csv and backup/ in line with a committed state."""
        backup = self.path / state.backup if state.backup else None
        if (backup and backup.exists() and state.best_epoch == state.epochs_done
                and not _same_file(backup, self.best_path)):
            with atomic_path(self.best_path) as tmp:
                _link_or_copy(backup, tmp)
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


def _link_or_copy(src, dst):
    # A hard link costs no space nor time; not every filesystem has them.
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise
        shutil.copyfile(src, dst)


def read_log(path):
    """The CSV log as a dict of lists (last row wins for a repeated epoch).

    Tolerant of what an interrupted or doubled writer may leave: repeated
    headers and cut lines are skipped, missing values read as NaN.
    """
    path = Path(path)
    if not path.exists():
        return {}
    rows = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows[int(row.get("epoch") or "")] = row
            except ValueError:
                continue
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
