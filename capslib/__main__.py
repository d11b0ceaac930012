"""Command line: ``python -m capslib {train,evaluate,bench} --help``."""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from capslib.config import PROFILES  # noqa: E402  (after the log level is set)


def _train_args(parser):
    parser.add_argument("--profile", choices=PROFILES,
                        help="recipe size (default: $CAPSLIB_PROFILE, else full)")
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
    parser.add_argument("--mixed-precision", action="store_true", default=None,
                        help="bfloat16 compute (routing and losses stay float32)")
    parser.add_argument("--distribute", action="store_true", default=None,
                        help="data-parallel over all local devices")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="stop before an epoch would end after SECONDS; the run then finishes "
                             "with the best epoch so far")
    parser.add_argument("--data-dir")


def _config(args):
    from capslib.config import config_for_profile
    return config_for_profile(
        args.profile, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_decay=args.lr_decay,
        routing_iterations=args.routing_iterations, augment=args.augment,
        val_size=args.val_size, seed=args.seed, train_limit=args.train_limit,
        mixed_precision=args.mixed_precision, distribute=args.distribute,
        time_budget_s=args.time_budget)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m capslib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train, select on validation, test once")
    _train_args(p_train)
    p_train.add_argument("--run-dir", default=None,
                         help="folder of the run (default runs/capsnet; resumes if present)")
    p_train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                         help="Keras fit verbosity: 1 progress bar (default), 2 a line per epoch")
    p_eval = sub.add_parser("evaluate", help="test metrics of a saved .keras model")
    p_eval.add_argument("model")
    p_eval.add_argument("--profile", choices=PROFILES)
    p_eval.add_argument("--data-dir")
    p_bench = sub.add_parser("bench", help="images/s against the naive reference")
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

    import matplotlib
    matplotlib.use("Agg")
    if args.command == "train":
        from capslib.train import DEFAULT_RUN_DIR, train
        metrics = train(_config(args), run_dir=args.run_dir or DEFAULT_RUN_DIR,
                        data_dir=args.data_dir,
                        verbose="auto" if args.verbose is None else args.verbose)
        return 0 if metrics else 1
    if args.command == "evaluate":
        from capslib.config import config_for_profile
        from capslib.train import evaluate
        result = evaluate(args.model, config_for_profile(args.profile), args.data_dir)
        print(json.dumps(result, indent=2))
        return 0
    from capslib.bench import print_report, run_benchmark, sweep_batch_sizes
    result = run_benchmark(args.batch_size, args.routing_iterations, args.steps,
                           naive=not args.no_naive, peak=not args.no_peak,
                           mixed_precision=args.mixed_precision)
    if args.sweep:
        sizes = [int(b) for b in args.sweep.split(",")]
        result["sweep"] = sweep_batch_sizes(sizes, args.routing_iterations, args.steps)
    print_report(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
