"""The time a training run will take, said before it is spent.

``python -m capslib train`` (``make train``) with the full recipe prints, before its
first epoch, how long the run will take on this machine and what the smaller
profiles cost:

- a resumed run with finished epochs: their own times (``epoch_seconds`` in
  state.json's history), no measurement;
- otherwise a short measurement: a few training and inference steps of the
  recipe's model on synthetic images, in a child process, so that the job's own
  random state, memory and compiled graphs are untouched (a seeded run ends the
  same with or without the estimate). About half a minute on 2 CPU cores.

``--no-estimate`` skips it; the quick profile and ``train()`` called from Python
(notebooks, the experiment) never measure.
"""
import json
import math
import subprocess
import sys

# Timed steps of the measurement (after one step that traces the graph).
MEASURED_TRAIN_STEPS = 5
MEASURED_INFER_STEPS = 3
# A measurement that takes longer than this is given up (the job goes on without it).
MEASUREMENT_TIMEOUT_S = 600


def measure_in_child(config, timeout=MEASUREMENT_TIMEOUT_S):
    """``capslib.estimate_probe.measure(config)`` in a child process (the run's own random
    state untouched): (speeds, None), or (None, why not)."""
    command = [sys.executable, "-m", "capslib.estimate_probe", json.dumps(config.to_dict())]
    try:
        # An interrupt (Ctrl-C, SIGTERM) raised while waiting kills the child too.
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"the measurement took over {timeout} s"
    except OSError as e:
        return None, str(e)
    from capslib.runs import check_interrupted
    check_interrupted()  # a Ctrl-C that reached the child alone still stops the job
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return None, f"the measurement failed ({last[:200]})"
    return json.loads(lines[-1]), None


def count(n, noun):
    """'1 epoch', '3 epochs'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def duration(seconds):
    """'about 12.5 hours', 'about 19 min', 'about 40 s'."""
    if seconds >= 2 * 3600:
        return f"about {seconds / 3600:.1f} hours"
    if seconds >= 90:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds:.0f} s"


def logged_speeds(history, n_train):
    """(seconds an epoch, {"train_images_per_s", "validation_s"}) from a run's kept
    epochs (state.json's history), or None when no epoch logged its time. Medians:
    one slow epoch (the machine shared for a while) does not make the estimate."""
    def finite(key):
        values = [row.get(key) for row in history]
        return sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v)
                      and v > 0)
    times, speeds = finite("epoch_seconds"), finite("train_images_per_s")
    if not times or not speeds:
        return None
    per_epoch, train_speed = times[len(times) // 2], speeds[len(speeds) // 2]
    validation = max(per_epoch - n_train / train_speed, 0.0)
    return per_epoch, times, {"train_images_per_s": train_speed, "validation_s": validation}


def announce(config, history, epochs_done, n_train, n_val, measure_speeds=None,
             out=None):
    """Print how long the rest of this run takes here, before training (full profile only).

    ``history``: the run's kept epochs (their times are used when there are any);
    else ``measure_speeds(config)`` is called (default ``measure_in_child``). Returns the
    estimated seconds, or None.
    """
    out = out or sys.stdout
    if config.profile != "full" or epochs_done >= config.epochs:
        return None
    left = config.epochs - epochs_done
    recipe = (f"full recipe: {count(config.epochs, 'epoch')} x {count(n_train, 'image')} "
              f"(and {n_val:,} validation images an epoch)")
    logged = logged_speeds(history, n_train)
    if logged:
        per_epoch, times, speeds = logged
        print(f"{recipe}; its {count(len(times), 'finished epoch')} took {per_epoch / 60:.1f} "
              f"min each (median; {min(times) / 60:.1f} to {max(times) / 60:.1f} min): "
              f"{count(left, 'epoch')} left -> {duration(per_epoch * left)}.", file=out)
    else:
        print(f"{recipe}. Measuring this machine's speed ({MEASURED_TRAIN_STEPS} training "
              "steps; --no-estimate skips it)...", file=out, flush=True)
        measured, why_not = (measure_speeds or measure_in_child)(config)
        if measured is None:
            print(f"No estimate: {why_not}. Training goes on.", file=out)
            return None
        speeds = {"train_images_per_s": measured["train_images_per_s"],
                  "validation_s": n_val / measured["infer_images_per_s"]}
        per_epoch = n_train / speeds["train_images_per_s"] + speeds["validation_s"]
        print(f"This machine trains ~{speeds['train_images_per_s']:.0f} images/s -> "
              f"{duration(per_epoch * left)} ({per_epoch / 60:.0f} min an epoch, "
              f"{count(left, 'epoch')}).", file=out)
    if config.time_budget_s:
        fits = max(1, min(left, int(config.time_budget_s // per_epoch)))
        print(f"This session (--time-budget {config.time_budget_s:g} s) trains about {fits} of "
              "them, then pauses: run the same command to go on.", file=out)
    _point_to_smaller_profiles(n_train, speeds, out)
    return per_epoch * left


def _point_to_smaller_profiles(n_train, speeds, out):
    """The class and lesson profiles' times at the same speed (same validation set)."""
    from capslib.config import config_for_profile

    def cost(profile):
        images = min(n_train, profile.train_limit or n_train)
        return profile.epochs * (images / speeds["train_images_per_s"] + speeds["validation_s"])
    lesson, in_class = config_for_profile("lesson"), config_for_profile("class")
    print(f"For a class: CAPSLIB_PROFILE=class ({in_class.epochs} epochs on "
          f"{in_class.train_limit:,} images, {duration(cost(in_class))}); homework: "
          f"CAPSLIB_PROFILE=lesson ({lesson.epochs} epochs, {duration(cost(lesson))}).",
          file=out)
