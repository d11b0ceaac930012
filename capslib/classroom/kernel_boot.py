"""Starts a student's IPython kernel inside the grading sandbox (run by path, not imported).

    python kernel_boot.py LIMITS_JSON AUDIT_LOG -f CONNECTION_FILE

Before any student code runs it sets the hard resource limits (CPU seconds, tasks, file
size, no core dumps), which an unprivileged process cannot raise again, and an audit hook
(PEP 578, which cannot be removed) that appends to ``AUDIT_LOG`` each attempt to reach a
path outside the sandbox's folders, to start a program or to open a connection. The log
is evidence for the teacher's report, not a protection: the sandbox is the protection.
"""
import json
import os
import resource
import sys


def _set_limits(limits):
    for name, value in (("RLIMIT_CPU", limits.get("cpu_seconds")),
                        ("RLIMIT_NPROC", limits.get("tasks")),
                        ("RLIMIT_FSIZE", limits.get("file_bytes")),
                        ("RLIMIT_CORE", 0)):
        if value is not None and hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))


def _audit_hook(log_path, allowed):
    allowed = tuple(os.path.join(p, "") for p in allowed)
    busy = []

    quiet = tuple(os.path.join(p, "") for p in ("/proc", "/sys", "/dev"))
    own_cells = f"/tmp/ipykernel_{os.getpid()}/"

    def outside(path):
        """The path when reaching it means reaching outside the sandbox: a folder it does
        not show, or a folder in /tmp that nobody made in this sandbox (the teacher's /tmp);
        else None (missing files in the visible folders are libraries probing)."""
        try:
            path = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        if os.path.join(path, "").startswith(quiet) or "/__pycache__/" in path \
                or path.startswith(own_cells):
            return None  # the system's own files; compiled-code caches Python probes anywhere;
            # the names IPython gives this kernel's cells (a traceback looks them up)
        if not os.path.join(path, "").startswith(allowed):
            return path
        parts = path.split(os.sep)
        if len(parts) > 3 and parts[1] == "tmp" and not os.path.lexists(os.sep.join(parts[:3])):
            return path
        return None

    def hook(event, args):
        if busy:  # our own write below raises events too
            return
        entry = None
        if event in ("open", "os.listdir", "os.scandir") and args and isinstance(
                args[0], (str, bytes, os.PathLike)):
            path = outside(args[0])
            if path:
                entry = {"event": "file", "path": path}
        elif event == "subprocess.Popen":
            entry = {"event": "program", "argv": [os.fsdecode(a) for a in (args[1] or [args[0]])
                                                  if isinstance(a, (str, bytes))][:8]}
        elif event == "os.system":
            entry = {"event": "program", "argv": [os.fsdecode(args[0])[:200]]}
        elif event in ("os.exec", "os.posix_spawn", "os.spawn"):
            argv = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [args[0]]
            entry = {"event": "program", "argv": [os.fsdecode(a)[:200] for a in argv
                                                  if isinstance(a, (str, bytes))][:8]}
        elif event == "socket.connect" and len(args) > 1:
            entry = {"event": "network", "address": repr(args[1])[:100]}
        if entry:
            busy.append(1)
            try:  # opened each time: a child about to exec may have closed every descriptor
                fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, (json.dumps(entry) + "\n").encode())
                finally:
                    os.close(fd)
            except (OSError, ValueError):
                pass
            finally:
                busy.pop()

    sys.addaudithook(hook)


def main():
    limits = json.loads(sys.argv.pop(1))
    audit_log = sys.argv.pop(1)
    _set_limits(limits)
    allowed = [*limits.get("readable", []), "/usr", "/etc", "/proc", "/dev", "/sys", "/tmp",
               "/lib", "/lib64", "/bin", os.getcwd(), os.path.dirname(audit_log)]
    _audit_hook(audit_log, allowed)
    from ipykernel import kernelapp
    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
