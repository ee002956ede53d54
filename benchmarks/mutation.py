"""Mutation score of the number-producing code: do the fast tests fail when it lies?

    python benchmarks/mutation.py --list                       # the groups
    python benchmarks/mutation.py precision registry --max-children 1
    python benchmarks/mutation.py                              # every group, one at a time
    python benchmarks/mutation.py latency --rev HEAD~3         # an older commit, its own tests

mutmut (3.x) mutates every function of a group's modules and runs only that group's
fast unit tests (no Ray, no subprocess) against each mutant, and of those only the tests
that reached the mutated function, so one group takes minutes, not the whole suite per
mutant. Each group's modules, tests and options are in ``GROUPS`` (``--list`` prints
them): one group per module where a module's tests are slow for another's mutants
(latency, quality, model_stats, measure; recipe, prune; frontier, summary; registry,
registry_io), the pure decisions tested directly (a virtual clock for the timer, MLflow
Run and ModelVersion entities built in memory), the I/O around them in their own groups.

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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Group:
    """Modules to mutate (globs under accelab/), the fast tests to run against each mutant
    (files or node ids), and optionally:

    ``functions``: mutate only these functions (mutmut's mangled names: ``x_<function>``,
    ``xǁ<Class>ǁ<method>``); the others are not run and not scored. Used to score a
    module's pure decisions apart from its I/O shell, whose tests need an MLflow store.

    ``depth``: mutmut's dependency_tracking_depth; 1 = a mutant runs only the tests that
    call its function directly (not through another function of the group), so a pure
    decision runs its own millisecond tests, not the store-backed tests of its caller. It
    can only lower a score (an indirect kill no longer counts), never raise one."""

    targets: list[str]
    tests: list[str]
    functions: tuple[str, ...] = ()
    depth: int = -1


def nodes(path: str, *names: str) -> list[str]:
    return [f"{path}::{n}" for n in names]


REGISTRY_IO_TESTS = [
    "tests/unit/review/test_alias.py",
    *nodes(
        "tests/unit/review/test_registry_served.py",
        "test_a_torch_only_sweep_registers_the_torch_export_program_the_torch_target_ran",
        "test_torch_int8_is_refused_saying_it_cannot_be_exported",
        "test_a_model_that_runs_another_backend_than_measured_is_not_registered",
        "test_a_rerun_recommending_the_same_file_registers_no_new_version",
    ),
]
GROUPS: dict[str, Group] = {
    # the old "measure" group (measure/* on tests/unit/measure + export) projected an hour
    # under load: one group per module now, each on the tests that exercise it
    "latency": Group(
        ["measure/latency.py"],
        [
            "tests/unit/measure/test_latency_clock.py",  # a virtual clock: exact, load-free
            "tests/unit/measure/test_latency_edges.py",  # the edges its first run left alive
            *nodes(  # the fast ones: calls_per_block, realtime, primed (0-20 ms runners)
                "tests/unit/measure/test_latency_stats.py",
                "test_stopping_rule_needs_enough_blocks_and_a_narrow_interval",
                "test_slow_models_get_fewer_calls_per_block",
                "test_a_slow_pair_is_timed_one_call_per_block_and_says_so",
                "test_realtime_priority_is_applied_while_timing_and_restored",
                "test_realtime_priority_only_for_single_threaded_cpu_runners_and_when_asked",
                "test_primed_timing_times_each_call_right_after_an_untimed_call_of_its_own",
            ),
        ],
    ),
    "quality": Group(
        ["measure/quality.py"],
        ["tests/unit/measure/test_quality_numbers.py", "tests/unit/measure/test_drop_format.py"],
    ),
    "model_stats": Group(
        ["measure/model_stats.py", "measure/runners.py"],
        [
            "tests/unit/measure/test_model_stats.py",
            "tests/unit/measure/test_runner_devices.py",  # device and dtype rules, CPU-only
        ],
    ),
    # measure_pair / compare / describe: real models timed (7 s a mutant: 20 min at load 2-10)
    "measure": Group(
        ["measure/__init__.py"],
        ["tests/unit/measure/test_measure.py", "tests/unit/measure/test_measure_edges.py"],
    ),
    "recipe": Group(
        ["compress/recipe.py"],
        [
            "tests/unit/compress/test_recipe_rules.py",
            *nodes(
                "tests/unit/compress/test_quant_recipe.py",
                "test_exact_name_beats_patterns_and_first_pattern_wins",
                "test_unmatched_keys_are_reported",
                "test_with_float_overrides_a_pattern",
            ),
        ],
        depth=1,
    ),
    "prune": Group(
        ["compress/prune.py"],
        [
            "tests/unit/compress/test_prune_rules.py",
            "tests/unit/compress/test_prune_edges.py",  # the edges its first run left alive
            # the untrained-model ones only: the rest train an MLP (4.5 s a mutant) or time
            # a wide one (load-sensitive); test_prune_rules.py covers their rules directly
            *nodes(
                "tests/unit/compress/test_compress_prune.py",
                "test_structured_cnn_follows_dependencies",
                "test_structured_exclude_of_a_coupled_layer_raises_instead_of_pruning_nothing",
                "test_cubic_sparsity_schedule",
            ),
        ],
    ),
    # one group per remaining compress module pair, each on the tests that reach it
    "quant": Group(
        ["compress/quant.py", "compress/distill.py"],
        [
            "tests/unit/compress/test_quant_edges.py",  # exact formulas on untrained models
            "tests/unit/compress/test_quant_recipe.py",
            "tests/unit/compress/test_torchao_globals.py",
            # the untrained ones only: the rest train a digits MLP first (2-5 s a mutant)
            *nodes(
                "tests/unit/compress/test_compress_quant.py",
                "test_weight_fake_quant_is_per_channel_symmetric",
                "test_conv_wrapper_and_autocast_bf16",
            ),
            *nodes(
                "tests/unit/compress/test_distill.py",
                "test_kl_term_is_zero_when_the_student_matches_the_teacher",
                "test_value_is_t_squared_times_the_mean_kl_over_positions",
                "test_gradient_pulls_the_student_logits_towards_the_teacher",
                "test_distiller_mixes_task_and_soft_loss_by_weight",
                "test_the_epoch_mean_averages_every_batch_of_the_epoch",
                "test_the_soft_term_is_fp32_under_bf16_logits_and_the_teacher_is_frozen",
            ),
        ],
    ),
    "heads": Group(
        ["compress/heads.py", "compress/sensitivity.py"],
        [
            "tests/unit/compress/test_heads_rules.py",  # imports the HF models' code before the forks
            "tests/unit/compress/test_heads_config.py",
            "tests/unit/compress/test_sensitivity.py",
            "tests/unit/compress/test_sensitivity_edges.py",
            # not the ONNX / ORT / OpenVINO exports nor the deployable reloads (seconds each
            # per mutant; resize_heads is tested directly in test_heads_rules.py)
            *nodes(
                "tests/unit/compress/test_heads_bert.py",
                "test_bert_heads_leave_q_k_v_and_the_output_projection",
                "test_the_bert_head_with_no_output_is_the_one_removed",
            ),
            *nodes(
                "tests/unit/compress/test_heads.py",
                "test_removing_heads_equals_zeroing_their_contribution_and_shrinks_the_layers",
                "test_pylm_parameter_count_drops_by_exactly_the_removed_rows_and_columns",
                "test_the_head_with_no_output_is_the_one_removed",
                "test_impossible_fractions_and_models_without_attention_are_refused",
                "test_preflight_names_the_key_for_a_model_without_attention_and_a_bad_fraction",
                "test_the_pipeline_prunes_heads_where_the_config_says_so",
            ),
        ],
    ),
    # the deployable files and the variant's steps on untrained tiny models (test_variant.py
    # trains and times real models: minutes a mutant); head-pruned GPTs reloaded (GPT-2's
    # head counts come from the recipe's "heads", pylm's from the layer shapes alone)
    "deploy": Group(
        ["compress/deploy.py", "compress/pipeline.py"],
        [
            "tests/unit/compress/test_deploy_files.py",
            "tests/unit/compress/test_pipeline_steps.py",
            *nodes(
                "tests/unit/compress/test_heads.py",
                "test_a_pruned_deployable_reloads_with_its_new_shapes[pylm]",
                "test_a_pruned_deployable_reloads_with_its_new_shapes[gpt2]",
            ),
        ],
    ),
    # every compress module on every compress and variant test: hours; see the groups above
    "compress": Group(["compress/*"], ["tests/unit/compress", "tests/unit/variant"]),
    # the frontier on its pure tests
    "frontier": Group(["sweep/pareto.py"], ["tests/unit/sweep/test_pareto.py"]),
    # the summary on Run entities built in memory; summarize, find_parent and child_runs
    # on small sqlite stores
    "summary": Group(
        ["sweep/summary.py"],
        [
            "tests/unit/sweep/test_summary_runs.py",
            *nodes(
                "tests/unit/sweep/test_summary.py",
                "test_metric_info_round_trips_through_the_parent_run_tags",
                "test_constraints_come_back_from_the_sweep_params",
                "test_a_row_becomes_a_point_oriented_so_that_higher_is_better",
                "test_recommendation_is_chosen_on_validation_with_the_noise_floor",
            ),
            *nodes(  # summarize on another target
                "tests/unit/sweep/test_noise_per_target.py",
                "test_each_targets_summary_uses_that_targets_noise_floor",
            ),
        ],
        depth=1,
    ),
    "stats": Group(
        ["stats.py"],
        [
            "tests/unit/test_stats.py",
            # the pure order-statistic tests only; the rest there time real blocks
            *nodes(
                "tests/unit/measure/test_latency_stats.py",
                "test_median_ranks_match_the_published_table",
                "test_median_ranks_cover_95_and_are_the_tightest_that_do",
                "test_too_few_values_give_the_widest_interval",
                "test_median_interval_picks_the_order_statistics",
                "test_paired_ratio_pairs_by_index",
            ),
        ],
    ),
    # the registry's decisions (alias move, which model and version, tags, refusal) on
    # their pure tests; the MLflow shell around them is "registry_io"
    "registry": Group(
        ["review/registry.py"],
        [
            "tests/unit/review/test_registry_decisions.py",
            *nodes(
                "tests/unit/review/test_alias.py",
                "test_default_alias_is_named_after_the_constraint",
                "test_a_fractional_default_alias_is_a_valid_mlflow_alias",
            ),
        ],
        functions=(
            "x_alias_of",
            "x_version_tags",
            "x_served_summary",
            "x_same_model",
            "x_measured_model",
            "x_refusal",
            "x_alias_decision",
        ),  # fmt: skip
        depth=1,
    ),
    # register / decide / logged_models on sqlite registries with real MLflow Models
    # (about a minute per mutant on the loaded 2-core box)
    "registry_io": Group(
        ["review/registry.py"],
        REGISTRY_IO_TESTS,
        functions=("x_register", "x_decide", "x_logged_models"),
        depth=1,
    ),
    "precision": Group(["training/precision.py"], ["tests/unit/training/test_precision_choice.py"]),
    "checkpoint": Group(
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


def configure(
    workspace: Path, tests: list[str], max_children: int, targets: list[str], depth: int = -1
) -> None:
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
        # a mutant's wall limit is (its tests' time + this) x 15: mutmut's 1 s made the
        # millisecond tests "time out" at a load of 10-20 (counted as detected, wrongly)
        "timeout_constant = 4.0\n"
        f"dependency_tracking_depth = {depth}\n"
    )


def scores(workspace: Path, functions: tuple[str, ...] = ()) -> Counter:
    """(module, status) -> mutants; with ``functions``, only those functions' mutants."""
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=workspace, capture_output=True,
                         text=True).stdout  # fmt: skip
    counts: Counter = Counter()
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)__mutmut_\d+: (\w[\w ]*)", line)
        if m:  # accelab.sweep.pareto.x_recommend__mutmut_12 -> accelab.sweep.pareto
            module, _, function = m.group(1).rpartition(".")
            if not functions or function in functions:
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
    group = GROUPS[name]
    workspace = Path(tempfile.mkdtemp(prefix=f"accelab-mutmut-{name}-"))
    stage(args.rev, workspace)
    tests = [t for t in group.tests if (workspace / t.split("::")[0]).exists()]
    configure(workspace, tests, args.max_children, group.targets, group.depth)
    print(f"[{name}] workspace {workspace}; tests: {' '.join(tests)}", flush=True)
    if group.functions:
        print(f"[{name}] functions: {' '.join(group.functions)}", flush=True)
    modules = [t.removesuffix(".py").replace("/", ".") for t in group.targets]
    only = [f"accelab.{m}.{f}__mutmut_*" for m in modules for f in group.functions]
    start = time.perf_counter()
    with open(workspace / "mutmut-run.log", "w") as log:  # its progress bar, for --keep
        subprocess.run(["mutmut", "run", *only], cwd=workspace, check=False, stdout=log,
                       stderr=log)  # fmt: skip
    print(f"[{name}] {time.perf_counter() - start:.0f} s", flush=True)
    counts = scores(workspace, group.functions)
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
        for name, g in GROUPS.items():
            only = f" [{' '.join(g.functions)}]" if g.functions else ""
            print(f"{name:<12} {' '.join(g.targets) + only:<40} {' '.join(g.tests)}")
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
