"""The throwaway sandbox a student's notebook kernel runs in while it is graded.

Tool: bubblewrap (``bwrap``, Debian's ``bubblewrap`` package), the sandbox Flatpak
uses: unprivileged, no daemon, one process tree per sandbox, gone when its first
process ends. A container engine would do the same but needs a daemon and an image;
``unshare`` alone does not build a file system view.

What the kernel sees (everything else of the machine does not exist for it):
the system's ``/usr``, ``/etc``, ``/lib*`` and the course's Python environment and
``capslib`` read-only; the course's ``data/`` and ``results/`` read-only; an empty
writable home ``/home/student`` (its working folder) and a private ``/tmp``. It has
no network (only its own loopback), its own process, IPC and host-name namespaces,
runs as an unprivileged user (its own uid per parallel job when the grader is root,
else the teacher's uid in a user namespace) with no capabilities, and every process in it ends when the sandbox ends
(``--die-with-parent``, a PID namespace whose first process is killed).

The notebook itself never enters the sandbox: the trusted grader sends one cell at a
time to the kernel over Unix sockets in a folder shared with it.

Limits (``Limits``; defaults below, each configurable): memory (a cgroup when the
machine lets the grader make one, else a watcher that kills the sandbox above the
limit), CPU seconds of the kernel, tasks (processes and threads), the size of a
file it writes, wall-clock seconds per cell and output bytes per cell (both enforced
by the runner, outside).
"""
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOME = "/home/student"  # the kernel's working folder, inside the sandbox
FIRST_UID = 61000  # a grader running as root gives job k the uid FIRST_UID + k
CGROUP_V1 = Path("/sys/fs/cgroup")
CGROUP_PARENT = "capsnet-grading"
# Programs the course's libraries start on their own (platform, matplotlib's font cache).
LIBRARY_PROGRAMS = {"uname", "fc-list", "ldconfig", "ldconfig.real", "lscpu", "nvidia-smi"}


@dataclasses.dataclass
class Limits:
    """What one notebook's sandbox may use (the grade command's flags set them)."""
    memory_mb: int = 6144  # resident memory of the sandbox (08 peaks near 4.1 GB: its experiment)
    cell_seconds: int = 60  # wall clock per cell (the course's long cells get 15 min)
    cpu_seconds: int = 1800  # CPU time of the kernel, every thread counted
    tasks: int = 256  # processes and threads (TensorFlow alone starts about 20 threads)
    output_bytes: int = 1_000_000  # of output per cell; the rest is cut with a note
    file_mb: int = 1024  # largest file it may write
    notebook_seconds: int = 1800  # wall clock for the whole notebook

    def describe(self):
        return (f"{self.memory_mb} MB memory, {self.cell_seconds} s per cell, "
                f"{self.notebook_seconds} s per notebook, "
                f"{self.cpu_seconds} s CPU, {self.tasks} processes and threads, "
                f"{self.output_bytes // 1000} kB output per cell, files up to {self.file_mb} MB, "
                "no network")


class SandboxUnavailable(Exception):
    """This machine cannot make the sandbox (the message says why and what to do)."""


def bwrap_path():
    return shutil.which("bwrap")


def check_available():
    """None when a sandbox can be made here, else the one-line reason."""
    exe = bwrap_path()
    if exe is None:
        return ("bubblewrap (bwrap) is not installed: `sudo apt-get install bubblewrap` "
                "(Debian, Ubuntu) or `sudo dnf install bubblewrap`")
    cmd = [exe, *_namespaces(), "--die-with-parent", "--ro-bind", "/", "/",
           "--proc", "/proc", "--dev", "/dev", *_as_user(0), "true"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap could not run: {e}"
    if done.returncode != 0:
        return (f"bwrap cannot make a sandbox on this machine ({done.stderr.strip()[:200]}): "
                "user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1)")
    return None


def _namespaces():
    """bwrap's options for the namespaces. A root grader makes them without a user
    namespace (bwrap then reads folders only root may enter, /root/.pyenv say) and the
    kernel drops to its own uid inside (``_as_user``); anyone else gets a user namespace."""
    if os.geteuid() != 0:
        return ["--unshare-all"]
    return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


def _as_user(slot):
    """Inside the sandbox: root's kernel becomes this job's own unprivileged uid, with no
    capabilities left (nothing when the grader is not root: it is unprivileged already)."""
    if os.geteuid() != 0:
        return []
    uid = FIRST_UID + slot
    return ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all"]


def _readable_python():
    """The folders the course's Python needs: the environment and the Python it was made from."""
    folders = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
               Path(sys.executable).resolve().parent.parent}
    import capslib
    folders.add(Path(capslib.__file__).resolve().parent)
    system = (Path("/usr"),)
    return sorted(f for f in folders if not any(f == s or s in f.parents for s in system))


class _Cgroups:
    """Memory and task limits by cgroup (v1 or v2), where the grader may make one."""

    def __init__(self, name, limits):
        self.paths, self.version = [], None
        if os.geteuid() != 0:
            return
        try:
            if (CGROUP_V1 / "memory" / "memory.limit_in_bytes").exists() and \
                    (CGROUP_V1 / "pids").is_dir():
                mem = CGROUP_V1 / "memory" / CGROUP_PARENT / name
                pids = CGROUP_V1 / "pids" / CGROUP_PARENT / name
                for path in (mem, pids):
                    path.mkdir(parents=True, exist_ok=True)
                    self.paths.append(path)
                (mem / "memory.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    (mem / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
                (pids / "pids.max").write_text(str(limits.tasks))
                self.version = 1
            elif (CGROUP_V1 / "cgroup.controllers").exists():
                parent = CGROUP_V1 / CGROUP_PARENT
                parent.mkdir(exist_ok=True)
                (CGROUP_V1 / "cgroup.subtree_control").write_text("+memory +pids")
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
                path = parent / name
                path.mkdir(exist_ok=True)
                self.paths.append(path)
                (path / "memory.max").write_text(str(limits.memory_mb * 2**20))
                (path / "memory.swap.max").write_text("0")
                (path / "pids.max").write_text(str(limits.tasks))
                self.version = 2
        except OSError:
            self.remove()
            self.paths, self.version = [], None

    def enter_command(self):
        """A shell prefix that moves the launched process into the cgroups before exec."""
        if not self.paths:
            return []
        moves = "; ".join(f"echo $$ > '{p}/cgroup.procs'" for p in self.paths)
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "capsnet-sandbox"]

    def oom_killed(self):
        try:
            if self.version == 1:
                text = (self.paths[0] / "memory.oom_control").read_text()
                counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
                failcnt = int((self.paths[0] / "memory.failcnt").read_text())
                return int(counts.get("oom_kill", 0)) > 0 or (
                    "oom_kill" not in counts and failcnt > 0)
            if self.version == 2:
                events = dict(line.split() for line in
                              (self.paths[0] / "memory.events").read_text().splitlines())
                return int(events.get("oom_kill", 0)) > 0
        except (OSError, ValueError, IndexError):
            pass
        return False

    def remove(self):
        for path in reversed(self.paths):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still leaving
                    time.sleep(0.1)


def _read_untrusted(path, limit):
    """At most ``limit`` bytes of a file the sandbox could write: never a link, a FIFO or a
    device (the grader would follow it or block), '' when it is not a regular file."""
    import stat
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def _process_table():
    """{pid: (ppid, name, rss_bytes)} of every process on the machine."""
    table = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), name, int(fields[21]) * page)
    return table


def descendants(pid, table=None):
    """Every process below ``pid`` (a sandbox's tree), as {pid: (ppid, name, rss)}."""
    table = table if table is not None else _process_table()
    children = {}
    for child, (parent, *_rest) in table.items():
        children.setdefault(parent, []).append(child)
    out, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = table[child]
            todo.append(child)
    return out


class Sandbox:
    """One notebook's sandbox: folders, cgroups, the kernel's command, the watcher.

    Use ``kernel_manager()`` to get a jupyter_client kernel manager whose kernel runs
    inside it, ``watch()`` as a task while the notebook runs, ``leftovers()`` before
    the kernel is shut down, ``close()`` at the end (kills what is left, removes the
    folders). ``verdict`` collects what happened.
    """

    def __init__(self, limits, slot=0, course_root=None, unsafe=False):
        from capslib.classroom.paths import ROOT
        self.limits, self.slot, self.unsafe = limits, slot, unsafe
        self.course_root = Path(course_root or ROOT)
        self.dir = Path(tempfile.mkdtemp(prefix="capsnet-sandbox-"))
        self.work = self.dir / "home"
        self.conn = self.dir / "conn"
        for path in (self.work, self.conn):
            path.mkdir()
        if os.geteuid() == 0 and not unsafe:
            uid = FIRST_UID + slot
            for path in (self.dir, self.work, self.conn):
                os.chown(path, uid, uid)
        os.chmod(self.dir, 0o755)
        self.audit_log = self.conn / "audit.log"
        self.cgroups = None if unsafe else _Cgroups(f"{self.dir.name}", limits)
        self.verdict = {"memory_limit_hit": False, "peak_memory_mb": None, "leftovers": [],
                        "attempts": [], "limits": limits.describe(),
                        "sandbox": "none (--unsafe-no-sandbox)" if unsafe else
                        "bubblewrap" + (f", cgroup v{self.cgroups.version}" if self.cgroups.version
                                        else ", memory watched every 0.1 s")}
        self.kernel_pid = None
        self._peak_rss = 0

    # -- the kernel's command --------------------------------------------------------
    def _binds(self):
        readable = _readable_python()
        args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
            if os.path.lexists(top):
                args += ["--ro-bind-try", top, top] if not os.path.islink(top) else \
                    ["--symlink", os.readlink(top), top]
        made = {"/", "/usr", "/etc", "/tmp"}

        def parents(target):  # bwrap makes missing parents 0700: make them enterable
            out = []
            for parent in reversed(Path(target).parents):
                if str(parent) not in made:
                    made.add(str(parent))
                    out += ["--perms", "0755", "--dir", str(parent)]
            return out

        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm",
                 "--perms", "1777", "--tmpfs", "/tmp"]
        for folder in readable:
            args += [*parents(folder), "--ro-bind", str(folder), str(folder)]
        args += [*parents(HOME), "--bind", str(self.work), HOME,
                 *parents(self.conn), "--bind", str(self.conn), str(self.conn)]
        # The course's data and measured results: the notebooks find them in their folder.
        for name in ("data", "results"):
            if (self.course_root / name).is_dir():
                args += ["--ro-bind", str(self.course_root / name), f"{HOME}/{name}"]
        return args, readable

    def _environment(self):
        keep = {name: os.environ[name] for name in (
            "CAPSLIB_PROFILE", "KERAS_BACKEND", "CAPSLIB_LANG", "LANG", "TZ") if name in os.environ}
        keep.setdefault("CAPSLIB_PROFILE", "quick")  # graded notebooks train the quick profile
        home = str(self.work) if self.unsafe else HOME
        env = {"HOME": home, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
               "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONNOUSERSITE": "1",
               "MPLCONFIGDIR": f"{home}/.config/matplotlib", "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", **keep}
        return env

    def kernel_command(self):
        """The kernel spec's argv: bubblewrap around kernel_boot.py."""
        boot = Path(__file__).with_name("kernel_boot.py")
        limits = {"cpu_seconds": self.limits.cpu_seconds, "file_bytes": self.limits.file_mb * 2**20,
                  "tasks": None if self.cgroups and self.cgroups.version else self._task_allowance()}
        if self.unsafe:
            limits = {}
        binds, readable = self._binds()
        limits["readable"] = [str(p) for p in readable]
        kernel = [sys.executable, str(boot), json.dumps(limits), str(self.audit_log),
                  "-f", "{connection_file}"]
        if self.unsafe:
            return kernel
        env_args = []
        for name, value in self._environment().items():
            env_args += ["--setenv", name, value]
        return [*(self.cgroups.enter_command() if self.cgroups else []),
                bwrap_path(), *_namespaces(), "--die-with-parent", "--new-session",
                "--hostname", "sandbox", *binds, "--chdir", HOME, "--clearenv", *env_args,
                "--", *_as_user(self.slot), *kernel]

    def _task_allowance(self):
        """RLIMIT_NPROC counts every task of the uid: a root grader gives each job its own
        uid; otherwise the teacher's own count plus the limit."""
        if os.geteuid() == 0:
            return self.limits.tasks
        mine = sum(1 for pid in _process_table()
                   if Path(f"/proc/{pid}").exists() and os.stat(f"/proc/{pid}").st_uid == os.geteuid())
        return mine * 8 + self.limits.tasks  # threads of the teacher's own processes count too

    def kernel_manager(self):
        """An AsyncKernelManager whose kernel starts in this sandbox (ipc transport)."""
        from jupyter_client import AsyncKernelManager
        from jupyter_client.kernelspec import KernelSpec

        command = self.kernel_command()
        sandbox = self

        class SandboxedKernelManager(AsyncKernelManager):
            @property
            def kernel_spec(self):
                # An interrupt as a message: a signal would stop at bwrap, outside the kernel.
                return KernelSpec(argv=command, display_name="sandboxed python", language="python",
                                  interrupt_mode="message",
                                  env={} if not sandbox.unsafe else sandbox._environment())

        km = SandboxedKernelManager(transport="ipc", ip=str(self.conn / "kernel"),
                                    connection_file=str(self.conn / "kernel.json"))
        km.write_connection_file()
        if os.geteuid() == 0 and not self.unsafe:
            os.chown(km.connection_file, FIRST_UID + self.slot, FIRST_UID + self.slot)
        return km

    # -- while it runs ---------------------------------------------------------------
    def processes(self, km):
        provisioner = getattr(km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        if process is None:
            return {}
        return descendants(process.pid)

    async def watch(self, km, interval=0.1):
        """Poll the sandbox's processes: peak resident memory (the processes' own, not the
        page cache a cgroup also counts), and the memory limit where no cgroup enforces it
        (the whole tree is killed above it)."""
        limit = self.limits.memory_mb * 2**20
        while True:
            tree = self.processes(km)
            rss = sum(r for _, _, r in tree.values())
            self._peak_rss = max(self._peak_rss, rss)
            if rss > limit and not (self.cgroups and self.cgroups.version):
                self.verdict["memory_limit_hit"] = True
                self.kill(tree)
            await asyncio.sleep(interval)

    def kill(self, tree):
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def leftovers(self, km):
        """Processes other than the sandbox's own and the kernel (started by a cell and
        still running when the notebook ended): recorded, then killed with the sandbox."""
        tree = self.processes(km)
        if not tree:
            return []
        kernel = [pid for pid, (_, name, _) in tree.items() if name.startswith("python")]
        kernel_pid = min(kernel) if kernel else None
        others = sorted(f"{name} (pid {pid})" for pid, (_, name, _) in tree.items()
                        if pid != kernel_pid and name not in ("bwrap", "setpriv", "sh"))
        self.verdict["leftovers"] = others
        return others

    def attempts(self):
        """What the audit hook saw the kernel try outside the sandbox (de-duplicated)."""
        seen, out = set(), []
        lines = _read_untrusted(self.audit_log, 1_000_000).splitlines()[:5000]
        for line in lines:
            try:
                entry = json.loads(line)
                text = {"file": lambda e: f"tried to reach {e['path']}",
                        "program": lambda e: "started a program: " + " ".join(e["argv"])[:120],
                        "network": lambda e: f"tried to connect to {e['address']}"}[entry["event"]](entry)
            except (ValueError, KeyError, TypeError):
                continue
            if entry["event"] == "program" and Path(entry["argv"][0]).name in LIBRARY_PROGRAMS:
                continue
            if text not in seen:
                seen.add(text)
                out.append(text)
        return out

    def close(self, km=None):
        """Kill whatever is left, collect the verdict, remove the folders and cgroups."""
        if km is not None:
            self.kill(self.processes(km))
        if self.cgroups and self.cgroups.version:
            if self.cgroups.oom_killed():
                self.verdict["memory_limit_hit"] = True
        self.verdict["peak_memory_mb"] = round(self._peak_rss / 2**20)
        self.verdict["attempts"] = self.attempts()
        if self.cgroups:
            self.cgroups.remove()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.verdict
