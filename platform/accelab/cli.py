"""``accelab`` command line: parse, load config, call one function.

Exit codes: 0 ok, 1 the run itself failed, 2 usage/config error (before any Ray work).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from accelab import __version__
from accelab.errors import UsageError

EXAMPLES = """examples:
  accelab sweep configs/digits_sweep.yaml
  accelab report digits-sweep
  accelab train configs/digits.yaml train.epochs=3 scaling.num_workers=2
  accelab compress configs/digits_compress.yaml --from runs:/<run_id> compression.quant.bits=8
  accelab validate configs/*.yaml
"""


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="typed config overrides")


def cmd_validate(args: argparse.Namespace) -> int:
    from accelab.config import load_config

    problems: list[str] = []
    for path in args.files:
        try:
            load_config(path, args.set or [])
            print(f"ok: {path}")
        except UsageError as exc:
            problems += exc.messages
    if problems:
        raise UsageError(problems)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from accelab.config import load_config

    cfg = load_config(args.config, args.overrides)
    from accelab.train import run_training

    outcome = run_training(cfg, resume=args.resume_run or args.resume)
    m = outcome.metrics
    print(
        f"done: test_accuracy={m.get('test_accuracy', float('nan')):.4f} "
        f"MLflow run {outcome.mlflow_run_id}; checkpoint {outcome.checkpoint_path}"
    )
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from accelab.config import load_config

    cfg = load_config(args.config, args.overrides)
    from accelab.compress_run import run_compress

    run_compress(cfg, args.source)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from accelab.config import load_config

    cfg = load_config(args.config, args.overrides)
    from accelab.sweep.driver import run_sweep

    run_sweep(cfg, resume=args.resume)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from accelab.sweep.summary import find_parent, format_table, summarize
    from accelab.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(args.tracking_uri))
    parent = find_parent(client, args.experiment, args.run)
    print(f"sweep {parent.info.run_name} (MLflow run {parent.info.run_id}, {client.tracking_uri})")
    print(format_table(summarize(client, parent)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelab",
        description="Make neural networks faster, measurably: DDP+AMP training (Ray Train), "
        "compression sweeps (Ray Tune), tracked in MLflow.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"accelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train data-parallel with mixed precision (Ray Train)")
    add_config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished run of this config from its last checkpoint",
    )
    p.add_argument("--resume-run", metavar="RAY_RUN", help="continue this Ray run (name) instead")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compress",
        help="prune/quantize a trained model, optionally fine-tune (DDP), measure and log it",
    )
    add_config_args(p)
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="CHECKPOINT",
        help="dense model: checkpoint dir, Ray Train run dir, or MLflow run (runs:/<run_id>)",
    )
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "sweep", help="search compression knobs with Ray Tune; end with a measured Pareto frontier"
    )
    add_config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="restore the newest interrupted sweep of this config: finished trials are kept",
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="print a sweep's frontier and recommendation from MLflow")
    p.add_argument("experiment", help="MLflow experiment name (the config's name)")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db)"
    )
    p.add_argument("--run", default=None, help="parent run id (default: the newest sweep)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("validate", help="check experiment files without running anything")
    p.add_argument("files", nargs="+", help="experiment YAML files")
    p.add_argument("--set", action="append", metavar="key.sub=value", help="override (repeatable)")
    p.set_defaults(func=cmd_validate)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return func(args)
    except UsageError as exc:
        for line in exc.messages:
            print(f"accelab: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the run itself failed: one readable line, details on demand
        if os.environ.get("ACCELAB_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[-1][:500]
        print(f"accelab: {args.command} failed: {type(exc).__name__}: {first}", file=sys.stderr)
        print(
            "accelab: the MLflow run holds what was recorded; Ray's logs are in "
            "/tmp/ray/session_latest/logs; set ACCELAB_DEBUG=1 for the traceback",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    # Overrides may also follow options (`--from X k=v`): collect them from the leftovers.
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if extra and (bad or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    code = run(args.func, args)
    sys.exit(code)


if __name__ == "__main__":
    main()
