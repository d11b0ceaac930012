"""Command line: ``python -m capslib {train,evaluate,ship,experiment,bench} --help``.

A user's mistake (a flag out of range, a run folder in use or damaged, a
model file that is not a CapsNet, a full disk, a folder that cannot be
written) prints one line and no traceback; exit code 2 for usage errors, 1
for the others, 130 for Ctrl-C and 143 for SIGTERM (both leave a run that
goes on when the same command is run again). ``train`` exits 0 both when the
run is finished and when ``--time-budget`` paused it (it says so; metrics.json
appears only at the end). ``--debug`` (or
``CAPSLIB_DEBUG=1``) shows the traceback.
"""
import argparse
import errno
import json
import os
import shlex
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


from capslib import _startup  # noqa: E402

if __name__ == "__main__":  # (done by capslib/__init__.py already under `python -m capslib`;
    _startup.install()      # not when a test or a notebook imports main)

from capslib.config import MODELS, PROFILES  # noqa: E402  (after the log level is set)


def _train_args(parser):
    parser.add_argument("--profile", choices=PROFILES,
                        help="recipe size (default: $CAPSLIB_PROFILE, else full)")
    parser.add_argument("--model", choices=MODELS,
                        help="capsnet (default) or baseline: the paper's baseline CNN")
    parser.add_argument("--decoder", action=argparse.BooleanOptionalAction, default=None,
                        help="CapsNet's reconstruction decoder and loss (default on)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--lr-decay", type=float, help="per-epoch decay factor (0.95)")
    parser.add_argument("--routing-iterations", type=int)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random 2 px shift + horizontal flip (default on)")
    parser.add_argument("--val-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--train-limit", type=int, help="use only N training images")
    parser.add_argument("--test-limit", type=int, help="evaluate on the first N test images")
    parser.add_argument("--mixed-precision", action="store_true", default=None,
                        help="bfloat16 compute (routing and losses stay float32)")
    parser.add_argument("--distribute", action="store_true", default=None,
                        help="data-parallel over all local devices")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="this session's time: stop before an epoch would end after SECONDS "
                             "(counted from the job's start; at least one epoch). The run is "
                             "paused, exit 0, test set not evaluated: run the same command (any "
                             "budget or none) to go on")
    parser.add_argument("--time-budget-action", choices=("pause", "finish"), default=None,
                        help="at the budget: pause (default) or finish: end the run there and "
                             "evaluate the best epoch so far (the behaviour before pausing)")
    parser.add_argument("--patience", type=int, metavar="N",
                        help="early stop: end the run when N epochs in a row did not lower the "
                             "validation loss (default: off, all --epochs)")
    parser.add_argument("--data-dir")


def _config(args):
    from capslib.config import config_for_profile
    return config_for_profile(
        args.profile, model=args.model, decoder=args.decoder, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_decay=args.lr_decay,
        routing_iterations=args.routing_iterations, augment=args.augment,
        val_size=args.val_size, seed=args.seed, train_limit=args.train_limit,
        test_limit=args.test_limit,
        mixed_precision=args.mixed_precision, distribute=args.distribute,
        time_budget_s=args.time_budget, time_budget_action=args.time_budget_action,
        patience=args.patience)


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also: CAPSLIB_DEBUG=1)")
    parser = argparse.ArgumentParser(prog="python -m capslib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train, select on validation, test once",
                             parents=[common])
    _train_args(p_train)
    p_train.add_argument("--run-dir", default=None,
                         help="folder of the run (default runs/capsnet; resumes if present)")
    p_train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                         help="Keras fit verbosity: 1 progress bar (default), 2 a line per epoch")
    p_train.add_argument("--no-estimate", action="store_true",
                         help="full profile: do not measure and say how long the run will take "
                              "before training (a resumed run's own epoch times cost nothing)")
    p_eval = sub.add_parser("evaluate", help="test metrics of a saved .keras model",
                            parents=[common])
    p_eval.add_argument("model")
    p_eval.add_argument("--profile", choices=PROFILES)
    p_eval.add_argument("--data-dir")
    p_ship = sub.add_parser("ship", parents=[common],
                            help="ship a finished run as the course's model (float16, card, sums)")
    p_ship.add_argument("run_dir")
    p_ship.add_argument("--out", default=None, help="default data/capsnet-fashion-mnist")
    p_ship.add_argument("--command-used", default=None,
                        help="the train command of the run, for the model card")
    p_ship.add_argument("--force", action="store_true",
                        help="replace a shipped model whose validation accuracy is higher")
    p_ship.add_argument("--data-dir")
    p_exp = sub.add_parser(
        "experiment", parents=[common],
        help="does routing help? baseline CNN vs CapsNet r=1, r=3, r=3 without decoder")
    p_exp.add_argument("--profile", choices=PROFILES,
                       help="size (default: $CAPSLIB_PROFILE, else class: ~45 min on 2 cores)")
    p_exp.add_argument("--runs-dir", help="the models' run folders (default "
                                          "runs/experiment-PROFILE; resumes if present)")
    p_exp.add_argument("--out", help="results folder (default results/routing-PROFILE)")
    p_exp.add_argument("--data-dir")
    p_bench = sub.add_parser("bench", help="images/s against the naive reference",
                             parents=[common])
    p_bench.add_argument("--batch-size", type=int, default=64)
    p_bench.add_argument("--routing-iterations", type=int, default=3)
    p_bench.add_argument("--steps", type=int, default=20, help="timed training steps")
    p_bench.add_argument("--no-naive", action="store_true", help="skip the naive reference")
    p_bench.add_argument("--mixed-precision", action="store_true",
                         help="bfloat16 compute for capslib's model (routing stays float32)")
    p_bench.add_argument("--no-peak", action="store_true", help="skip the matmul peak")
    p_bench.add_argument("--sweep", metavar="B1,B2,...",
                         help="also measure these batch sizes (capslib model only)")
    p_bench.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    args.command_line = "python -m capslib " + shlex.join(
        sys.argv[1:] if argv is None else list(argv))
    # The command line's own process exits next; a caller (a test, a script) gets its
    # handlers back.
    return _main(args, exits_next=argv is None)


def _main(args, exits_next=False):
    from capslib.runs import Interrupted, interrupt_handling
    debug = args.debug or os.environ.get("CAPSLIB_DEBUG", "") not in ("", "0")
    _startup.exit_if_signalled()  # a signal while importing that an import swallowed
    try:
        # SIGTERM as Ctrl-C; signals Keras or JAX swallow still count. It takes over
        # from the start-up handler with no moment left uncovered.
        with interrupt_handling(restore=not exits_next):
            _startup.uninstall()
            return _run(args) if debug else _caught(args)
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
    where = " (run the same command again: it goes on from there)" if (
        args.command in ("train", "experiment")) else ""
    name = "Stopped by SIGTERM" if signum == signal.SIGTERM else "Interrupted"
    print(f"\n{name}{where}.", file=sys.stderr)
    return 128 + signum


def _caught(args):
    """``_run`` with each expected error as one line and an exit code."""
    from capslib.config import ConfigError
    from capslib.data import DataError
    from capslib.model import ModelFileError
    from capslib.runs import RunError
    try:
        return _run(args)
    except (ConfigError, ModelFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RunError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            print(f"error: no space left on the disk ({e}). Free some space and run the same "
                  "command again.", file=sys.stderr)
        else:
            print(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}. "
                  "Check the path and its permissions (--debug shows where).", file=sys.stderr)
        return 1


def _run(args):
    import matplotlib
    matplotlib.use("Agg")
    for flag in ("run_dir", "runs_dir", "out", "data_dir"):
        if getattr(args, flag, None) == "":
            from capslib.config import ConfigError
            raise ConfigError(f"--{flag.replace('_', '-')} '': give a folder (or leave the "
                              "option out for the default)")
    if args.command == "train":
        from capslib.train import DEFAULT_RUN_DIR, train
        # None: the time budget paused the run (it said so); a success too.
        train(_config(args), run_dir=args.run_dir or DEFAULT_RUN_DIR, data_dir=args.data_dir,
              verbose="auto" if args.verbose is None else args.verbose,
              announce_time=not args.no_estimate)
        return 0
    if args.command == "evaluate":
        from capslib.config import config_for_profile
        from capslib.train import evaluate
        result = evaluate(args.model, config_for_profile(args.profile), args.data_dir)
        print(json.dumps(result, indent=2))
        return 0
    if args.command == "ship":
        from capslib import pretrained
        out = args.out or pretrained.SHIPPED_DIR
        # Built beside ``out``, verified, then put in place in one rename (never half a model).
        metrics = pretrained.ship_run(args.run_dir, out, args.command_used, args.data_dir,
                                      force=args.force)
        print(f"shipped {args.run_dir} to {out}: validation {metrics['val_accuracy']:.2%}, "
              f"test {metrics['test_accuracy']:.2%} (once, {metrics['n_test']:,} images), "
              f"float16 weights {metrics['shipped_weights']['test_accuracy']:.2%} (all "
              f"{metrics['shipped_weights']['n_test']:,} test images)")
        return 0
    if args.command == "experiment":
        from capslib.experiment import run_experiment
        run_experiment(args.profile, args.runs_dir, args.out, args.data_dir,
                       command=args.command_line)
        return 0
    from capslib.bench import print_report, run_benchmark, sweep_batch_sizes
    from capslib.config import ConfigError
    try:
        sizes = [int(b) for b in args.sweep.split(",")] if args.sweep else []
    except ValueError:
        raise ConfigError(f"--sweep {args.sweep!r}: must be batch sizes separated by commas, "
                          "e.g. 100,256") from None
    for flag, value in [("--batch-size", args.batch_size), ("--steps", args.steps),
                        ("--routing-iterations", args.routing_iterations)] + [
                            ("--sweep", b) for b in sizes]:
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1")
    result = run_benchmark(args.batch_size, args.routing_iterations, args.steps,
                           naive=not args.no_naive, peak=not args.no_peak,
                           mixed_precision=args.mixed_precision)
    if sizes:
        result["sweep"] = sweep_batch_sizes(sizes, args.routing_iterations, args.steps)
    print_report(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
