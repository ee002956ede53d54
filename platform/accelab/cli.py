"""``accelab`` command line: parse, load config, call one command function.

Exit codes: 0 ok, 1 the run itself failed, 2 usage/config error (before any Ray work and
before any MLflow run, experiment or store is created), 130 / 143 interrupted by SIGINT /
SIGTERM (runs marked KILLED, nothing registered; the message says how to ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence

from accelab import __version__, started  # noqa: F401  (started: the process clock starts)
from accelab.errors import Interrupted, UsageError, catch_signals, interruption

EXAMPLES = """examples:
  accelab sweep configs/digits_sweep.yaml
  accelab report digits-sweep
  accelab train configs/digits.yaml train.epochs=3 scaling.num_workers=2
  accelab compress configs/digits_mlp.yaml --from runs:/<run_id> compression.quant.bits=8
  accelab sensitivity configs/digits_mlp.yaml --from runs:/<run_id> --bits 8 4 --sparsity 0.9
  accelab validate configs/*.yaml
  accelab ui                                  # MLflow UI on 127.0.0.1, latest sweep's link
  accelab compare <sweep run id> <sweep run id>
  accelab export runs:/<run_id> --format onnx-int8

Any config key can be overridden after the config file as dotted.key=value."""
OVERRIDES_USAGE = "[key.sub=value ...]"
DEFAULT_STORE = "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db"


# Each command imports its driver when it runs, not at the top of this module: importing
# every driver (torch, Ray Train and Tune, MLflow, ONNX Runtime) took 21 s on a busy
# 2-core machine, against 0.1 s for this module, so ``accelab --help`` and a mistyped
# command answer at once.


def load(args: argparse.Namespace):
    from accelab.preflight import load_config

    return load_config(args.config, args.overrides)


def cmd_validate(args: argparse.Namespace) -> None:
    from accelab.commands.validate import validate

    files = [f for f in args.files if "=" not in f or os.path.exists(f)]
    overrides = [f for f in args.files if f not in files]
    validate(files, [*(args.set or []), *overrides])


def cmd_train(args: argparse.Namespace) -> None:
    cfg = load(args)
    from accelab.commands.train import train

    train(cfg, resume=args.resume_run or args.resume)


def cmd_compress(args: argparse.Namespace) -> None:
    cfg = load(args)
    from accelab.commands.compress import run_compress

    run_compress(cfg, args.source)


def cmd_sensitivity(args: argparse.Namespace) -> None:
    cfg = load(args)
    from accelab.commands.sensitivity import run_sensitivity

    run_sensitivity(cfg, args.source, args.bits or (), args.sparsity or (), args.layers or ())


def cmd_sweep(args: argparse.Namespace) -> None:
    cfg = load(args)
    from accelab.commands.sweep import run_sweep

    run_sweep(cfg, resume=args.resume, retrain=args.retrain)


def cmd_report(args: argparse.Namespace) -> None:
    from accelab.commands.report import report

    report(args.experiment, args.tracking_uri, args.run)


def cmd_export(args: argparse.Namespace) -> None:
    from accelab.commands.export import export

    export(args.source, args.format, args.out, args.tracking_uri)


def cmd_ui(args: argparse.Namespace) -> None:
    from accelab.commands.ui import ui

    ui(args.tracking_uri, args.port)


def cmd_compare(args: argparse.Namespace) -> None:
    from accelab.commands.compare import compare

    compare(args.sweeps, args.tracking_uri, args.out, args.target)


def cmd_sync(args: argparse.Namespace) -> None:
    from accelab.commands.sync import sync

    sync(args.path, args.tracking_uri)


def tracking_uri_option(p: argparse.ArgumentParser, default_text: str = DEFAULT_STORE) -> None:
    p.add_argument(
        "--tracking-uri", default=None, help=f"MLflow tracking URI (default: {default_text})"
    )


def config_parser(sub, name: str, help_text: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help_text, usage=f"accelab {name} CONFIG {OVERRIDES_USAGE} [options]"
    )
    p.add_argument("config", help="experiment YAML file; then any dotted.key=value overrides")
    p.set_defaults(func=func, overrides=[])
    return p


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="accelab",
        description="Make neural networks faster, measurably: DDP+AMP training (Ray Train), "
        "compression sweeps (Ray Tune), tracked in MLflow.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"accelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs: dict[str, argparse.ArgumentParser] = {}

    p = subs["train"] = config_parser(
        sub, "train", "train data-parallel with mixed precision (Ray Train)", cmd_train
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished run of this config from its last checkpoint",
    )
    p.add_argument("--resume-run", metavar="RAY_RUN", help="continue this Ray run (name) instead")

    p = subs["compress"] = config_parser(
        sub, "compress",
        "prune/quantize a trained model, optionally fine-tune (DDP), measure and log it",
        cmd_compress,
    )  # fmt: skip
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="CHECKPOINT",
        help="dense model: checkpoint dir, Ray Train run dir, or MLflow run (runs:/<run_id>)",
    )

    p = subs["sensitivity"] = config_parser(
        sub, "sensitivity",
        "per layer: the validation drop when only that layer is quantized or pruned",
        cmd_sensitivity,
    )  # fmt: skip
    p.add_argument("--from", dest="source", required=True, metavar="CHECKPOINT",
                   help="dense model, as for compress --from")  # fmt: skip
    p.add_argument("--bits", type=int, nargs="+", help="bit-widths, 2..8 (default: 8)")
    p.add_argument("--sparsity", type=float, nargs="+", help="fractions of a layer's weights")
    p.add_argument("--layers", nargs="+", help="layer names or patterns (default: all)")

    p = subs["sweep"] = config_parser(
        sub, "sweep", "search compression knobs with Ray Tune; end with a measured Pareto frontier",
        cmd_sweep,
    )  # fmt: skip
    p.add_argument(
        "--resume",
        action="store_true",
        help="restore the newest interrupted sweep of this config: finished trials are kept",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train the dense baseline again, even if this config (same key) trained one before",
    )

    p = subs["report"] = sub.add_parser(
        "report", help="print a sweep's frontier and recommendation from MLflow"
    )
    p.add_argument("experiment", help="MLflow experiment name (the config's name)")
    tracking_uri_option(p)
    p.add_argument("--run", default=None, help="parent run id (default: the newest sweep)")
    p.set_defaults(func=cmd_report)

    p = subs["export"] = sub.add_parser(
        "export",
        help="write a run's model as ONNX / ONNX int8 / torch.export, runnable without accelab",
    )
    p.add_argument("source", help="runs:/<run id>, a run id, or models:/<name>@<alias>")
    p.add_argument("--format", default="onnx",
                   choices=["onnx", "onnx-int8", "torch-export", "openvino", "openvino-int8"])  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default ./export/<run id>)")
    tracking_uri_option(p)
    p.set_defaults(func=cmd_export)

    p = subs["ui"] = sub.add_parser(
        "ui", help="start the MLflow UI on the store (127.0.0.1) and print the latest sweep's URL"
    )
    tracking_uri_option(p)
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = subs["compare"] = sub.add_parser(
        "compare", help="two sweeps' frontiers side by side, and one plot with both"
    )
    p.add_argument(
        "sweeps",
        nargs=2,
        metavar="SWEEP",
        help="a sweep's parent run id, or an experiment name (its newest sweep)",
    )
    tracking_uri_option(p)
    p.add_argument("--out", default="compare.png", help="the plot (default ./compare.png)")
    p.add_argument(
        "--target", default=None, help="target key, e.g. ort_b1 (default: each sweep's primary)"
    )
    p.set_defaults(func=cmd_compare)

    p = subs["sync"] = sub.add_parser(
        "sync", help="record in MLflow what a training's checkpoint holds but MLflow missed"
    )
    p.add_argument("path", help="checkpoint directory, or a Ray Train run directory (latest)")
    tracking_uri_option(p, "the URI the run was logged to")
    p.set_defaults(func=cmd_sync)

    p = subs["validate"] = sub.add_parser(
        "validate", help="check experiment files without running anything"
    )
    p.add_argument("files", nargs="+", help="experiment YAML files (and key.sub=value overrides)")
    p.add_argument("--set", action="append", metavar="key.sub=value", help="override (repeatable)")
    p.set_defaults(func=cmd_validate)
    return parser, subs


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues an interrupted ``args`` (same config and overrides)."""
    words = ["accelab", args.command, args.config, *args.overrides, "--resume"]
    return shlex.join(words)


def interrupted(exc: Interrupted, args: argparse.Namespace) -> int:
    """One line: what the interrupted command kept, and how to continue it."""
    parts = ["accelab: interrupted", exc.kept]
    if exc.resumable and hasattr(args, "config"):
        parts.append(f"continue with: {resume_command(args)}")
    print("; ".join(p for p in parts if p), file=sys.stderr)
    return exc.exit_code


def run(func: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    catch_signals()
    try:
        func(args)
        if stopped := interruption():  # a library swallowed the signal and returned
            return interrupted(stopped, args)
        return 0
    except UsageError as exc:
        for line in exc.messages:
            print(f"accelab: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return interrupted(interruption(exc), args)
    except Exception as exc:  # the run itself failed: one readable line, details on demand
        if stopped := interruption():  # the signal reached Ray's processes first
            return interrupted(stopped, args)
        if os.environ.get("ACCELAB_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[-1][:500]
        print(f"accelab: {args.command} failed: {type(exc).__name__}: {first}", file=sys.stderr)
        for hint in [*started.hints(), "set ACCELAB_DEBUG=1 for the traceback"]:
            print(f"accelab: {hint}", file=sys.stderr)
        return 1


def quiet_logs() -> None:
    """MLflow's store migrations and Ray's start-up chatter are not for the user."""
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_logs()
    # User trainables named module:attr are found in the working directory (as with
    # ``python -m``), on PYTHONPATH, or as installed packages; local Ray workers inherit it.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH")) if p)
    parser, subs = build_parser()
    # Overrides follow the config file (and may follow options): collect them from the leftovers.
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-")]
    target = subs.get(args.command, parser)
    if args.command == "validate" and extra and not bad:
        args.files += extra
    elif extra and (bad or not hasattr(args, "overrides")):
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    elif extra:
        args.overrides = list(extra)
    code = run(args.func, args)
    sys.stdout.flush()
    sys.stderr.flush()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        # Everything is recorded by now: stop Ray and leave without the interpreter's
        # teardown of torch/Ray/MLflow (~2 s of a ~30 s command).
        sys.modules["ray"].shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
