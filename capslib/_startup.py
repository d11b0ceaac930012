"""Ctrl-C and SIGTERM while ``python -m capslib`` starts (importing TensorFlow
takes seconds): one line and exit 130 / 143, never a traceback of the imports.

Installed before anything heavy is imported, only where the defaults are in
place (a job started with SIGINT ignored keeps ignoring it); the command's own
handling (``capslib.runs.interrupt_handling``) takes over once it runs.
"""
import signal
import sys

_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
_installed = {}


def _stopped_while_starting(signum, frame):
    name = "Stopped by SIGTERM" if signum == signal.SIGTERM else "Interrupted"
    print(f"\n{name} while starting, before anything was written.", file=sys.stderr)
    raise SystemExit(128 + signum)


def install():
    for sig, default in _DEFAULTS.items():
        if signal.getsignal(sig) is default:
            signal.signal(sig, _stopped_while_starting)
            _installed[sig] = default


def uninstall():
    for sig, default in list(_installed.items()):
        if signal.getsignal(sig) is _stopped_while_starting:
            signal.signal(sig, default)
        del _installed[sig]
