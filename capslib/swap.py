"""Replace a whole folder so that a kill at any moment leaves the old one or the new one.

The new folder is built beside the target, in a hidden temporary folder
(``.NAME.KIND-PID-XXXX``: same file system, so renames are atomic), and put in
place at the end. On Linux the two are exchanged in one ``renameat2(RENAME_EXCHANGE)``
call: the target is never missing, not even for an instant. Elsewhere (or on a file
system without the call) the old folder is renamed aside first (``.NAME.old-PID-XXXX``);
a kill between the two renames leaves it aside, and the next ``clean_stale()`` puts it
back. The old folder is removed only once the new one is in place. Leftovers of a killed
process (its PID no longer runs) are removed by ``clean_stale()``.

Used by the hand-out (``capslib.classroom.handout``) and by ``python -m capslib ship``
(``capslib.pretrained``).
"""
import ctypes
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

_RENAME_EXCHANGE = 2
_renameat2 = None


def _load_renameat2():
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError):
            pass
    return _renameat2


def exchange(a, b):
    """Swap the paths ``a`` and ``b`` atomically; False where the system cannot."""
    fn = _load_renameat2()
    if not fn:
        return False
    at_cwd = -100  # AT_FDCWD
    if fn(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pattern(target):
    return re.compile(rf"^\.{re.escape(Path(target).name)}\.([a-z]+)-([0-9]+)-")


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_temporary(name):
    """Whether a file name is one of this module's temporary folders."""
    return re.match(r"^\..+\.(build|ship|old)-[0-9]+-", name) is not None


def temp_sibling(target, kind):
    """A new empty hidden folder beside ``target`` (created with its parents)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-",
                                 dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # as mkdir would make it (mkdtemp: 0700)
    return path


def clean_stale(target):
    """Remove what killed processes left beside ``target``; if ``target`` is missing
    and a killed replacement left the old folder aside, put it back. Returns the
    names removed or restored."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern, done = _pattern(target), []
    stale = []
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(2))):
            stale.append((match.group(1), entry))
    for kind, entry in sorted(stale, key=lambda s: s[0] != "old"):  # restore first
        if kind == "old" and not os.path.lexists(target):
            os.rename(entry, target)
            done.append(f"restored {entry.name}")
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(f"removed {entry.name}")
    return done


def replace_folder(new, target):
    """Put the folder ``new`` at ``target``; the old ``target`` (if any) is removed after the
    new one is in place. ``new`` must lie beside ``target`` (``temp_sibling``)."""
    new, target = Path(new), Path(target)
    if not os.path.lexists(target):
        os.rename(new, target)
        _fsync_dir(target.parent)
        return
    if exchange(new, target):  # ``new`` now holds the old folder
        _fsync_dir(target.parent)
        shutil.rmtree(new, ignore_errors=True)
        return
    aside = temp_sibling(target, "old")
    os.rmdir(aside)
    os.rename(target, aside)
    os.rename(new, target)  # a kill between the two: clean_stale() puts ``aside`` back
    _fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)
