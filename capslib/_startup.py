"""Ctrl-C and SIGTERM while ``python -m capslib`` starts (importing TensorFlow
or JAX takes seconds): one line and exit 130 / 143, never a traceback of the
imports, never a job that trains on.

Installed before anything heavy is imported, only where the defaults are in
place (a job started with SIGINT ignored keeps ignoring it); the command's own
handling (``capslib.runs.interrupt_handling``) takes over once it runs.

Python runs a signal handler wherever the main thread happens to be, and some
of those places swallow what it raises: JAX's garbage-collector callback
("Exception ignored in: _xla_gc_callback"), a bare ``except:`` around an
optional import. So the signal is also remembered, and the command checks it
(``exit_if_signalled``) before it starts any work.
"""
import contextlib
import signal
import sys
import threading

_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
_installed = {}
_received = []  # signals that came while starting


class StoppedWhileStarting(SystemExit):
    """Exit 128 + signum; raised by the start-up handler."""


def _stopped_while_starting(signum, frame):
    if _received:  # a second signal while the first one stops the command: noted only
        _received.append(signum)
        return
    _received.append(signum)
    name = "Stopped by SIGTERM" if signum == signal.SIGTERM else "Interrupted"
    print(f"\n{name} while starting, before anything was written.", file=sys.stderr)
    raise StoppedWhileStarting(128 + signum)


def install():
    for sig, default in _DEFAULTS.items():
        if signal.getsignal(sig) is default:
            signal.signal(sig, _stopped_while_starting)
            _installed[sig] = default
    if _installed:
        quiet_unraisable(StoppedWhileStarting)


def exit_if_signalled():
    """Exit 128 + signum if a signal came while starting and something swallowed it."""
    if _received:
        raise StoppedWhileStarting(128 + _received[0])


def uninstall():
    for sig, default in list(_installed.items()):
        if signal.getsignal(sig) is _stopped_while_starting:
            signal.signal(sig, default)
        del _installed[sig]


class _CtrlCWhileImporting(KeyboardInterrupt):
    """Raised by ``ctrl_c_not_lost``'s handler (dropped quietly where it is swallowed)."""


@contextlib.contextmanager
def ctrl_c_not_lost():
    """``import capslib`` from a script or a notebook: a Ctrl-C during the heavy
    imports that something swallows (JAX's gc callback) is raised when they end,
    as the KeyboardInterrupt Python would have raised. Only where Python's default
    Ctrl-C is in place, in the main thread."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received = []

    def handler(signum, frame):
        received.append(signum)
        raise _CtrlCWhileImporting()
    signal.signal(signal.SIGINT, handler)
    quiet_unraisable(_CtrlCWhileImporting)
    try:
        yield
    except _CtrlCWhileImporting:
        received.append(signal.SIGINT)
    finally:
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def is_startup_handler(handler):
    return handler is _stopped_while_starting


_quiet = set()
_previous_hook = []


def _hook(unraisable):
    if isinstance(unraisable.exc_value, tuple(_quiet)):
        return
    (_previous_hook[-1] if _previous_hook else sys.__unraisablehook__)(unraisable)


def quiet_unraisable(*exception_types):
    """Let Python drop, without its "Exception ignored in ..." report, the
    ``exception_types`` a signal handler raised where they cannot propagate
    (the signal itself is remembered and acted on by whoever installed it)."""
    _quiet.update(exception_types)
    if sys.unraisablehook is not _hook:  # (again, if someone replaced it since)
        _previous_hook[:] = [sys.unraisablehook]
        sys.unraisablehook = _hook


class WrappedLoader:
    """An import loader whose ``exec_module`` runs inside ``context()`` (a context manager
    factory): how capslib guards the imports that load Keras, TensorFlow or JAX."""

    def __init__(self, loader, context):
        self._loader, self._context = loader, context

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with self._context():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)
