"""TensorFlow's start-up notices kept off the screen; anything else it prints shown.

Since TensorFlow 2.17 its C++ start-up lines ("WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR", "I0000 ... oneDNN custom
operations are on ...", "... Could not find cuda drivers ...", "To enable the
following instructions: AVX2 ...") are written to the process's stderr (file
descriptor 2) before ``TF_CPP_MIN_LOG_LEVEL`` is read, so in a notebook they make
a red box under the first cell. ``import capslib`` installs an import hook: while
``tensorflow`` is imported, descriptor 2 goes to a temporary file; afterwards the
lines that are such notices (informational ``I`` lines, that absl warning, the
CPU-instructions note) are dropped and every other line (errors, warnings) is
written back to stderr, in order.
"""
import contextlib
import importlib.machinery
import os
import re
import sys
import tempfile

from capslib._startup import WrappedLoader

_NOTICE = re.compile(
    r"^(I\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "  # absl INFO lines (oneDNN, CUDA, CPU)
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)")


def is_startup_notice(line):
    """True for one of TensorFlow's informational start-up lines (see the module)."""
    return bool(_NOTICE.match(line))


@contextlib.contextmanager
def startup_notices_dropped():
    """Run the block with descriptor 2 captured; then write back what is not a notice.

    Does nothing where descriptor 2 cannot be duplicated (closed, not a file).
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as captured:
        for stream in (sys.stderr, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            for stream in (sys.stderr, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = "".join(line for line in text.splitlines(keepends=True)
                           if not is_startup_notice(line))
            if kept:
                with contextlib.suppress(OSError):
                    os.write(2, kept.encode())


class QuietTensorFlowImport:
    """A ``sys.meta_path`` finder for the top-level ``tensorflow`` package only."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != "tensorflow" or os.environ.get("CAPSLIB_TF_STARTUP_LINES") == "show":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = WrappedLoader(spec.loader, startup_notices_dropped)
        return spec


def install():
    """Put the finder first on ``sys.meta_path`` (once; a no-op if TensorFlow is loaded)."""
    if "tensorflow" in sys.modules:
        return
    if not any(getattr(f, "__name__", None) == QuietTensorFlowImport.__name__
               for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport)
