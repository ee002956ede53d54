"""Mutation score of the number-producing code: do the fast tests fail when it lies?

    python benchmarks/mutation.py [--rev HEAD] [--max-children 2]

mutmut (3.x) mutates every function in the measurement, Pareto, sweep-summary and
compression code, runs the fast (no Ray, no subprocess) tests against each mutant, and
this prints, per file, how many mutants the tests killed. mutmut only looks for code
under ``src/``, so the package is staged into a scratch workspace as ``src/accelab``
(from the working tree, or from ``--rev`` to score an older commit with its own tests).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["measure*", "pareto.py", "sweep/summary.py", "sweep/table.py", "stats.py", "compress/*"]
FAST_TESTS = ["test_measure.py", "test_stats.py", "test_pareto.py", "test_summary.py",
              "test_variant.py", "test_compress_prune.py", "test_compress_quant.py"]  # fmt: skip


def stage(rev: str | None, workspace: Path) -> list[str]:
    """Copy the package (as src/accelab), trainables, tests and configs into ``workspace``;
    return the fast test files that exist there."""
    if rev:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(workspace)], input=archive, check=True)
        root = workspace
    else:
        root = REPO
        for name in ("tests", "configs", "trainables"):
            shutil.copytree(
                REPO / name, workspace / name, ignore=shutil.ignore_patterns("__pycache__")
            )
    (workspace / "src").mkdir()
    shutil.copytree(root / "platform" / "accelab", workspace / "src" / "accelab",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.move(str(workspace / "trainables"), workspace / "src" / "trainables")
    if (workspace / "platform").exists():
        shutil.rmtree(workspace / "platform")
    return [f"tests/{t}" for t in FAST_TESTS if (workspace / "tests" / t).is_file()]


def configure(workspace: Path, tests: list[str], max_children: int, targets: list[str]) -> None:
    only = ", ".join(f'"src/accelab/{t}"' for t in targets)
    selection = ", ".join(f'"{t}"' for t in tests)
    (workspace / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'markers = ["ray: starts a real Ray session"]\n'
        'addopts = "-p no:cacheprovider -m \\"not ray\\""\n'
        "[tool.mutmut]\n"
        'source_paths = ["src/"]\n'
        f"only_mutate = [{only}]\n"
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
        f'also_copy = ["configs/"]\n'
        f"max_children = {max_children}\n"
    )


def scores(workspace: Path) -> Counter:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=workspace, capture_output=True,
                         text=True).stdout  # fmt: skip
    counts: Counter = Counter()
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)__mutmut_\d+: (\w[\w ]*)", line)
        if m:  # accelab.sweep.pareto.x_recommend__mutmut_12 -> accelab.sweep.pareto
            counts[(m.group(1).rsplit(".", 1)[0], m.group(2).strip())] += 1
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rev", help="score this commit (with its own tests) instead of the working tree"
    )
    p.add_argument("--max-children", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the workspace (mutmut browse there)")
    p.add_argument("--targets", nargs="+", default=TARGETS, help="globs under accelab/ to mutate")
    args = p.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="accelab-mutmut-"))
    tests = stage(args.rev, workspace)
    configure(workspace, tests, args.max_children, args.targets)
    print(f"workspace {workspace}; tests: {' '.join(tests)}", flush=True)
    with open(workspace / "mutmut-run.log", "w") as log:  # its progress bar, for --keep
        subprocess.run(["mutmut", "run"], cwd=workspace, check=False, stdout=log, stderr=log)
    counts = scores(workspace)
    modules = sorted({m for m, _ in counts})
    # detected: a test failed (killed) or hung (timeout); undetected: tests passed with the
    # mutant (survived) or no fast test runs that code at all (no tests)
    detected, undetected = ("killed", "timeout"), ("survived", "no tests")
    print(f"\n{'module':<32} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} "
          f"{'no tests':>8} {'score':>6}")  # fmt: skip
    total: Counter = Counter()
    for module in [*modules, None]:
        row = (
            total
            if module is None
            else Counter({s: n for (m, s), n in counts.items() if m == module})
        )
        if module is not None:
            total.update(row)
        found = sum(row[s] for s in detected)
        score = found / max(1, found + sum(row[s] for s in undetected))
        print(f"{module or 'all':<32} {sum(row.values()):>7} {row['killed']:>7} {row['timeout']:>7} "
              f"{row['survived']:>8} {row['no tests']:>8} {score:>6.0%}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
