"""TensorFlow's start-up lines kept off a notebook's first screen (capslib._tf_startup):
the informational lines dropped, anything else TensorFlow or the code prints kept."""
import os
import subprocess
import sys

import pytest

from capslib import _tf_startup

pytestmark = pytest.mark.backend_free

NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796311693.875755   24814 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results.\n",
    "I0000 00:00:1796311693.876108   24814 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.\n",
]
KEPT = ["E0000 00:00:1796311693.9 24814 cuda_dnn.cc:8310] Unable to load cuDNN: a real error\n",
        "Traceback (most recent call last):\n", "ValueError: something the student must see\n"]


def test_notices_are_dropped_and_everything_else_is_written_back_in_order(capfd):
    with _tf_startup.startup_notices_dropped():
        for line in [NOTICES[0], KEPT[0], *NOTICES[1:], *KEPT[1:]]:
            os.write(2, line.encode())
    assert capfd.readouterr().err == "".join(KEPT)


def test_the_block_raising_still_restores_stderr_and_keeps_its_lines(capfd):
    with pytest.raises(RuntimeError):
        with _tf_startup.startup_notices_dropped():
            os.write(2, (NOTICES[1] + KEPT[2]).encode())
            raise RuntimeError("import failed")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == KEPT[2] + "after\n"


@pytest.mark.parametrize("show", [False, True])
def test_import_capslib_then_tensorflow_prints_no_start_up_line(show):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    env.pop("CAPSLIB_TF_STARTUP_LINES", None)
    if show:
        env["CAPSLIB_TF_STARTUP_LINES"] = "show"  # how to see them (and that they exist here)
    code = "import capslib, tensorflow, sys; print('imported', file=sys.stderr)"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stderr
    notices = [line for line in err.splitlines(keepends=True) if _tf_startup.is_startup_notice(line)]
    assert err.endswith("imported\n")
    if show:
        assert notices, "this TensorFlow printed no start-up line: the test shows nothing"
    else:
        assert notices == [], notices
