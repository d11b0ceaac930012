"""One submission run in its sandbox, by the trusted side (nbclient outside, kernel inside).

``run_submission`` takes a notebook whose locked cells nbgrader has already restored,
starts a kernel in a fresh ``sandbox.Sandbox``, sends it one cell at a time with the
time limit of each cell (60 s; the course's own long cells 15 min; 5 s for the cells
after a runaway one), keeps at most ``output_bytes`` of output per cell, and returns the
executed notebook with what happened: cells stopped at the limit, the kernel's death
and its cause, outputs cut, processes left behind, attempts to reach outside, peak
memory. Several run at once on one event loop (``grading.grade --jobs``).
"""
import asyncio
import atexit
import json
import time

from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from capslib.classroom import hooks
from capslib.classroom.sandbox import Sandbox

GRACE_SECONDS = 15  # after a cell's limit: the interrupt's grace before the sandbox is killed


def _label(cell, index):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {index}"


class SandboxedClient(NotebookClient):
    """nbclient with the course's per-cell limits, an output cap, and the sandbox's report."""

    def __init__(self, nb, km, sandbox, limits, long_sources=frozenset(), **kw):
        super().__init__(nb, km=km, timeout=limits.cell_seconds, interrupt_on_timeout=True,
                         allow_errors=True, kernel_name="python3", shutdown_kernel="immediate",
                         startup_timeout=120, iopub_timeout=10, **kw)
        self.sandbox, self.limits, self.long_sources = sandbox, limits, long_sources
        self.timeouts, self.cut = [], []
        self.current = None  # (cell index, started, limit) of the cell running now
        self.last = None  # index of the last cell sent to the kernel
        self._bytes = {}
        self.timeout_func = self._cell_limit

    def _update_display_id(self, display_id, msg):
        # update_display_data replaces an earlier output: capped like any other output.
        if len(json.dumps(msg.get("content", {}))) > self.limits.output_bytes:
            note = f"[output cut: an update of more than {self.limits.output_bytes // 1000} kB]"
            msg = {**msg, "content": {**msg["content"], "data": {"text/plain": note}}}
            self.cut.append(self.last)
        return super()._update_display_id(display_id, msg)

    def _cell_limit(self, cell):
        if hooks.long_cell_key(cell) in self.long_sources:
            return max(hooks.LONG_CELL_TIMEOUT, self.limits.cell_seconds)
        seconds = self.limits.cell_seconds
        return min(seconds, hooks.AFTER_TIMEOUT) if self.timeouts else seconds

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self.current = (cell_index, time.monotonic(), self._cell_limit(cell))
        self.last = cell_index
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            self.current = None

    async def _async_handle_timeout(self, timeout, cell=None):
        index = self.current[0] if self.current else None
        self.timeouts.append(_label(cell or {}, index))
        return await super()._async_handle_timeout(timeout, cell)

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {})))
        used = self._bytes.get(cell_index, 0)
        self._bytes[cell_index] = used + size
        if used + size > self.limits.output_bytes:
            if cell_index not in self.cut:
                self.cut.append(cell_index)
                outs.append(_note(f"[output cut here: this cell printed more than "
                                  f"{self.limits.output_bytes // 1000} kB]"))
            return None
        return super().output(outs, msg, display_id, cell_index)


def _note(text):
    from nbformat.v4 import new_output
    return new_output("stream", name="stderr", text=text + "\n")


async def _guard(client, sandbox, km):
    """Kill the sandbox when a cell ignores its interrupt, or when the whole notebook has run
    longer than its limit (the kernel then counts as dead)."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(0.5)
        if time.monotonic() - started > client.limits.notebook_seconds:
            sandbox.verdict["notebook_time_limit"] = client.limits.notebook_seconds
            sandbox.kill(sandbox.processes(km))
            return
        if client.current:
            index, started, limit = client.current
            if time.monotonic() - started > limit + GRACE_SECONDS:
                sandbox.verdict["killed_after_limit"] = _label(client.nb.cells[index], index)
                sandbox.kill(sandbox.processes(km))
                return


async def run_submission(nb, limits, slot=0, course_root=None, unsafe=False, long_sources=frozenset()):
    """Execute ``nb`` (nbformat, locked cells restored) in a fresh sandbox.

    ``long_sources``: sources of the assignment's own long cells (15 minutes each).
    Returns ``(nb, info)``: the notebook with its outputs and a dict: ``died`` (None or the
    cell where the kernel died), ``timeouts``, ``cut`` (cells whose output was cut), and
    the sandbox's verdict (``memory_limit_hit``, ``peak_memory_mb``, ``leftovers``,
    ``attempts``, ``limits``, ``sandbox``), ``seconds``.
    """
    sandbox = Sandbox(limits, slot=slot, course_root=course_root, unsafe=unsafe)
    km = sandbox.kernel_manager()
    client = SandboxedClient(nb, km, sandbox, limits, long_sources=long_sources,
                             resources={"metadata": {"path": str(sandbox.work if unsafe else sandbox.dir)}})
    started = time.monotonic()
    tasks = [asyncio.ensure_future(sandbox.watch(km)), asyncio.ensure_future(_guard(client, sandbox, km))]
    died = None
    log = open(sandbox.dir / "kernel.log", "w")  # the kernel's own stdout and stderr
    try:
        await client.async_execute(stdout=log, stderr=log)
    except DeadKernelError:
        index = client.last
        died = _label(nb.cells[index], index) if index is not None else "start-up"
    except Exception as e:  # the kernel could not start, a protocol failure: reported
        died = f"start-up ({type(e).__name__}: {str(e)[:200]})"
    finally:
        atexit.unregister(client._cleanup_kernel)  # the kernel is ours to stop, below
        for task in tasks:
            task.cancel()
        if not sandbox.verdict["leftovers"]:
            sandbox.leftovers(km)  # before the kernel stops: what its cells left running
        try:
            await asyncio.wait_for(asyncio.shield(_shutdown(km)), 20)
        except Exception:
            pass
        log.close()
        info_log = (sandbox.dir / "kernel.log").read_text(errors="replace")[-4000:]
        verdict = sandbox.close(km)
        verdict["kernel_log"] = info_log
    info = {"died": died, "timeouts": client.timeouts,
            "cut": [_label(nb.cells[i], i) for i in client.cut],
            "seconds": round(time.monotonic() - started, 1), **verdict}
    return nb, info


async def _shutdown(km):
    try:
        if await km.is_alive():
            await km.shutdown_kernel(now=True)
    except Exception:
        pass
    await km.cleanup_resources()
