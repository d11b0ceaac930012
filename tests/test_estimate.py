"""`python -m capslib train` says, before training, how long the full recipe takes here
(capslib/estimate.py): from a resumed run's own epoch times, else from a short
measurement in a child process that leaves the job's results unchanged."""
import io
import json

import numpy as np
import pytest

from capslib import estimate
from capslib.__main__ import main
from capslib.config import config_for_profile
from capslib.train import read_log

FULL = config_for_profile("full")
SPEEDS = {"train_images_per_s": 55.0, "infer_images_per_s": 125.0}
# A full-profile run at tiny sizes (the profile, not the sizes, decides the estimate).
TINY_FULL = ["train", "--profile", "full", "--epochs", "1", "--batch-size", "16",
             "--train-limit", "32", "--val-size", "20", "--test-limit", "20", "--verbose", "0"]


def said(config, history=(), epochs_done=0, measure=None):
    out, calls = io.StringIO(), []

    def fake_measure(config):
        calls.append(config)
        return measure if measure is not None else SPEEDS, "no reason"
    seconds = estimate.announce(config, list(history), epochs_done, 55_000, 5_000,
                                measure_speeds=fake_measure, out=out)
    return out.getvalue(), calls, seconds


def test_a_new_full_run_is_measured_and_the_time_said_with_the_profiles():
    text, calls, seconds = said(FULL)
    assert len(calls) == 1
    per_epoch = 55_000 / 55 + 5_000 / 125  # 1040 s
    assert seconds == pytest.approx(50 * per_epoch)
    assert "full recipe: 50 epochs x 55,000 images" in text
    assert "~55 images/s -> about 14.4 hours (17 min an epoch, 50 epochs)" in text
    assert "CAPSLIB_PROFILE=class (2 epochs on 10,000 images, about 7 min)" in text
    assert "CAPSLIB_PROFILE=lesson (3 epochs, about 52 min)" in text
    assert "--no-estimate" in text


def test_a_resumed_run_uses_its_own_epoch_times_without_measuring():
    history = [{"epoch": e, "epoch_seconds": s, "train_images_per_s": 55_000 / (s - 40)}
               for e, s in enumerate([760.0, 2074.0, 958.0])]
    text, calls, seconds = said(FULL, history, epochs_done=3)
    assert calls == []
    assert seconds == pytest.approx(47 * 958.0)
    assert "its 3 finished epochs took 16.0 min each (median; 12.7 to 34.6 min)" in text
    assert "47 epochs left -> about 12.5 hours" in text
    assert "CAPSLIB_PROFILE=class" in text


def test_epochs_without_times_and_a_failed_measurement():
    text, calls, _ = said(FULL, [{"epoch": 0, "epoch_seconds": float("nan")}], epochs_done=1)
    assert len(calls) == 1  # nothing usable logged: measured
    out = io.StringIO()
    assert estimate.announce(FULL, [], 0, 55_000, 5_000, out=out,
                             measure_speeds=lambda c: (None, "the measurement failed (x)")) is None
    assert "No estimate: the measurement failed (x). Training goes on." in out.getvalue()


def test_a_time_budget_says_how_many_epochs_this_session_trains():
    text, _, _ = said(FULL.replace(time_budget_s=3600))
    assert "This session (--time-budget 3600 s) trains about 3 of them, then pauses" in text


@pytest.mark.parametrize("profile", ["quick", "class", "lesson"])
def test_only_the_full_profile_is_estimated(profile):
    assert said(config_for_profile(profile)) == ("", [], None)


def test_a_finished_count_of_epochs_is_not_estimated():
    assert said(FULL, [{"epoch": 0, "epoch_seconds": 9.0}], epochs_done=50)[0] == ""


def test_the_duration_reads_as_a_person_would_say_it():
    assert estimate.duration(40) == "about 40 s"
    assert estimate.duration(19 * 60) == "about 19 min"
    assert estimate.duration(12.5 * 3600) == "about 12.5 hours"


@pytest.mark.heavy
def test_the_command_line_says_the_time_before_training_and_the_run_is_unchanged(
        tmp_path, monkeypatch, capsys):
    """A real measurement in a child process: the same log and metrics as --no-estimate."""
    monkeypatch.chdir(tmp_path)
    assert main([*TINY_FULL, "--run-dir", "measured"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("full recipe: 1 epoch x 32 images"), out
    assert "This machine trains ~" in out and "CAPSLIB_PROFILE=class" in out
    assert out.index("CAPSLIB_PROFILE=class") < out.index("test accuracy")
    assert main([*TINY_FULL, "--run-dir", "plain", "--no-estimate"]) == 0
    assert "full recipe" not in capsys.readouterr().out
    measured, plain = read_log(tmp_path / "measured/log.csv"), read_log(tmp_path / "plain/log.csv")
    for key in set(plain) - {"epoch_seconds", "train_images_per_s"}:
        np.testing.assert_allclose(measured[key], plain[key], rtol=1e-6, err_msg=key)
    a, b = (json.loads((tmp_path / f"{r}/metrics.json").read_text()) for r in ("measured", "plain"))
    assert a["confusion_matrix"] == b["confusion_matrix"]


@pytest.mark.heavy
def test_a_resumed_run_says_its_own_epochs_time_and_measures_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = [*TINY_FULL, "--epochs", "2", "--run-dir", "run"]
    assert main([*flags, "--time-budget", "0.001", "--no-estimate"]) == 0  # pauses after 1
    assert "paused after epoch 1 of 2" in capsys.readouterr().out
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "Resuming run after epoch 1 of 2." in out
    assert "full recipe: 2 epochs x 32 images" in out and "its 1 finished epoch took" in out
    assert "Measuring" not in out and "1 epoch left" in out
    assert out.index("its 1 finished epoch") < out.index("test accuracy")
