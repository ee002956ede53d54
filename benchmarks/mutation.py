"""Mutation score of the number-producing code: do the fast tests fail when it lies?

    python benchmarks/mutation.py --list                       # the groups
    python benchmarks/mutation.py precision registry --max-children 1
    python benchmarks/mutation.py                              # every group, one at a time
    python benchmarks/mutation.py measure --rev HEAD~3         # an older commit, its own tests

mutmut (3.x) mutates every function of a group's modules and runs only that group's
fast unit tests (no Ray, no subprocess) against each mutant, so one group takes minutes,
not the whole suite per mutant. Groups (module globs under accelab/ -> tests):

    measure     measure/*                         tests/unit/measure, tests/unit/export
    compress    compress/*                        tests/unit/compress, tests/unit/variant
    frontier    sweep/pareto.py                   tests/unit/sweep/test_pareto.py
    summary     sweep/summary.py                  tests/unit/sweep/test_summary.py,
                                                  tests/unit/sweep/test_noise_per_target.py
    stats       stats.py                          tests/unit/test_stats.py, the order-statistic
                                                  tests of tests/unit/measure/test_latency_stats.py
    registry    review/registry.py                tests/unit/review
    precision   training/precision.py             tests/unit/training/test_precision_choice.py
    checkpoint  training/checkpoint.py            tests/unit/training/test_checkpoint.py,
                                                  tests/unit/training/test_checkpoint_files.py,
                                                  tests/unit/training/test_resume.py

Each group prints, per file: mutants, killed, timeout, survived, no tests, and the score
(killed + timeout) / all. mutmut only looks for code under ``src/``, so the package is
staged into a scratch workspace as ``src/accelab`` (from the working tree, or ``--rev``).
``--keep`` keeps the workspaces; ``mutmut browse`` / ``mutmut show <name>`` there lists
and shows the survivors. The CPU matters: on a shared 2-core machine use --max-children 1.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "measure": (["measure/*"], ["tests/unit/measure", "tests/unit/export"]),
    "compress": (["compress/*"], ["tests/unit/compress", "tests/unit/variant"]),
    # the frontier on its pure tests; the summary on those that rebuild it from MLflow
    "frontier": (["sweep/pareto.py"], ["tests/unit/sweep/test_pareto.py"]),
    "summary": (
        ["sweep/summary.py"],
        ["tests/unit/sweep/test_summary.py", "tests/unit/sweep/test_noise_per_target.py"],
    ),
    "stats": (
        ["stats.py"],
        [
            "tests/unit/test_stats.py",
            *(  # the pure order-statistic tests only; the rest there time real blocks
                f"tests/unit/measure/test_latency_stats.py::{t}"
                for t in (
                    "test_median_ranks_match_the_published_table",
                    "test_median_ranks_cover_95_and_are_the_tightest_that_do",
                    "test_too_few_values_give_the_widest_interval",
                    "test_median_interval_picks_the_order_statistics",
                    "test_paired_ratio_pairs_by_index",
                )
            ),
        ],
    ),
    "registry": (["review/registry.py"], ["tests/unit/review"]),
    "precision": (["training/precision.py"], ["tests/unit/training/test_precision_choice.py"]),
    "checkpoint": (
        ["training/checkpoint.py"],
        [
            "tests/unit/training/test_checkpoint.py",
            "tests/unit/training/test_checkpoint_files.py",
            "tests/unit/training/test_resume.py",
        ],
    ),
}


def stage(rev: str | None, workspace: Path) -> None:
    """Copy the package (as src/accelab), trainables, tests and configs into ``workspace``."""
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


def configure(workspace: Path, tests: list[str], max_children: int, targets: list[str]) -> None:
    """mutmut's config: mutate only ``targets``, run only ``tests`` (and, per mutant, only
    those of them that reached the mutated function)."""
    only = ", ".join(f'"src/accelab/{t}"' for t in targets)
    selection = ", ".join(f'"{t}"' for t in tests)
    (workspace / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'markers = ["ray: starts a real Ray session", "slow: slow"]\n'
        'addopts = "-p no:cacheprovider -p no:warnings -m \\"not ray\\""\n'
        "[tool.mutmut]\n"
        'source_paths = ["src/"]\n'
        f"only_mutate = [{only}]\n"
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
        'also_copy = ["configs/"]\n'
        'process_isolation = "forkserver"  # torch is not fork-safe\n'
        f"max_children = {max_children}\n"
    )


def scores(workspace: Path) -> Counter:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=workspace, capture_output=True,
                         text=True).stdout  # fmt: skip
    counts: Counter = Counter()
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)__mutmut_\d+: (\w[\w ]*)", line)
        if m:  # accelab.sweep.pareto.x_recommend__mutmut_12 -> accelab.sweep.pareto
            module = re.sub(r"\.(x_|xǁ)\S*$", "", m.group(1))
            counts[(module, m.group(2).strip())] += 1
    return counts


def survivors(workspace: Path) -> list[str]:
    out = subprocess.run(["mutmut", "results"], cwd=workspace, capture_output=True,
                         text=True).stdout  # fmt: skip
    return [line.strip() for line in out.splitlines() if "__mutmut_" in line]


def table(counts: Counter, label: str) -> Counter:
    """Print one row per module (and the group's total); detected = killed or timeout,
    undetected = survived or no test reached it."""
    detected, undetected = ("killed", "timeout"), ("survived", "no tests")
    total: Counter = Counter()
    for module in [*sorted({m for m, _ in counts}), None]:
        if module is None:
            row = total
        else:
            row = Counter({s: n for (m, s), n in counts.items() if m == module})
            total.update(row)
        found = sum(row[s] for s in detected)
        score = found / max(1, found + sum(row[s] for s in undetected))
        print(f"{module or label + ' (all)':<36} {sum(row.values()):>7} {row['killed']:>7} "
              f"{row['timeout']:>7} {row['survived']:>8} {row['no tests']:>8} {score:>6.0%}")  # fmt: skip
    return total


def run_group(name: str, args) -> Counter:
    targets, tests = GROUPS[name]
    workspace = Path(tempfile.mkdtemp(prefix=f"accelab-mutmut-{name}-"))
    stage(args.rev, workspace)
    tests = [t for t in tests if (workspace / t.split("::")[0]).exists()]
    configure(workspace, tests, args.max_children, targets)
    print(f"[{name}] workspace {workspace}; tests: {' '.join(tests)}", flush=True)
    start = time.perf_counter()
    with open(workspace / "mutmut-run.log", "w") as log:  # its progress bar, for --keep
        subprocess.run(["mutmut", "run"], cwd=workspace, check=False, stdout=log, stderr=log)
    print(f"[{name}] {time.perf_counter() - start:.0f} s", flush=True)
    counts = scores(workspace)
    header()
    total = table(counts, name)
    if args.show_survivors:
        for line in survivors(workspace):
            print(f"  {line}")
    if not args.keep:
        shutil.rmtree(workspace, ignore_errors=True)
    return total


def header() -> None:
    print(f"{'module':<36} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} "
          f"{'no tests':>8} {'score':>6}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    p.add_argument("--list", action="store_true", help="list the groups and exit")
    p.add_argument(
        "--rev", help="score this commit (with its own tests) instead of the working tree"
    )
    p.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the workspaces (mutmut browse there)")
    p.add_argument("--show-survivors", action="store_true", help="list surviving mutants")
    args = p.parse_args()
    if args.list:
        for name, (targets, tests) in GROUPS.items():
            print(f"{name:<11} {' '.join(targets):<40} {' '.join(tests)}")
        return
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    totals = {g: run_group(g, args) for g in args.groups or GROUPS}
    if len(totals) > 1:
        print("\nper group")
        header()
        for g, counts in totals.items():
            table(Counter({(g, s): n for s, n in counts.items()}), g)


if __name__ == "__main__":
    main()
