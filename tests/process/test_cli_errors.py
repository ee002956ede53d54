"""Bad input through the real CLI, table-driven: every case exits 2 within seconds with one
message naming the file (and line), key or override, before Ray starts and before any
MLflow run, experiment, database file or artifact is created. No case starts Ray.

Add a row for every new entry point (a subcommand, a path, URI, run id or module the
user can give).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, REPO

DIGITS = str(CONFIGS / "digits.yaml")
MLP = str(CONFIGS / "digits_mlp.yaml")
SWEEP = str(CONFIGS / "digits_sweep.yaml")
BAD_ID = "0123456789abcdef0123456789abcdef"
DROP_DAC = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]  # fmt: skip  (root obeys file modes)


@dataclass
class Case:
    args: list[str]
    expected: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)  # created in the case's folder
    env: dict[str, str] = field(default_factory=dict)
    as_plain_user: bool = False  # file permissions apply (root's override dropped)
    unreadable: str | None = None  # a created file to chmod 000
    read_only: str | None = None  # a created folder to chmod 555
    stdout: list[str] = field(default_factory=list)
    not_expected: list[str] = field(default_factory=list)
    max_seconds: float = 30.0  # CPU seconds of the command itself (not wall time: load varies)
    # where waiting is the bug: wall seconds the command may take beyond REFERENCE started at
    # the same moment (the same start-up under the same load; a fixed wall limit tests the
    # machine). Every case has the hang guard HANG_S.
    max_wait_s: float | None = None
    setup: Callable[[Path], dict[str, str]] | None = None  # a store; values for "{name}"


GOOD = "name: good\ntrainable: {name: digits, model: mlp, model_args: {hidden: [32]}}\n"
CKPT_META = '{"trainable": {"name": "digits", "model": "mlp", "model_args": {"hidden": [32]}, "data_seed": 0}}'


def sweep_store(folder: Path) -> dict[str, str]:
    """An MLflow store: experiment ``exp`` with a finished sweep (two targets) and its trial;
    experiment ``failing`` with a finished sweep, then a newer one that failed."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    targets = '[["torch_b64", "torch"], ["ort_b1", "onnxruntime, batch 1"]]'
    ids = {}
    for exp_name, run_key, status in [("exp", "sweep", "FINISHED"), ("failing", "sweep", "FINISHED"),
                                      ("failing", "failed", "FAILED")]:  # fmt: skip
        exp = client.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp else client.create_experiment(exp_name)
        run = client.create_run(exp_id, tags={"accelab.kind": "sweep", "accelab.targets": targets},
                                run_name=f"{exp_name}-{run_key}")  # fmt: skip
        if status == "FAILED":
            client.set_tag(run.info.run_id, "accelab.error", "RuntimeError: boom in finish")
        client.set_terminated(run.info.run_id, status)
        ids[f"{exp_name}_{run_key}"] = run.info.run_id
        time.sleep(0.01)  # distinct start times: "newest" is well defined
    exp_id = client.get_experiment_by_name("exp").experiment_id
    trial = client.create_run(exp_id, tags={"accelab.kind": "trial",
                                            "mlflow.parentRunId": ids["exp_sweep"]})  # fmt: skip
    return {**ids, "trial": trial.info.run_id}


STORE = ["--tracking-uri", "sqlite:///mlflow.db"]

CASES: dict[str, Case] = {
    # --- the trainable: imported, never called -----------------------------------------
    "trainable_sys_exit": Case(["train", DIGITS, "trainable.name=sys:exit"],
        ["override 'trainable.name=sys:exit': trainable.name: sys:exit is a builtin_function_or_method, not a trainables.base.Task"]),
    "trainable_os_abort": Case(["validate", DIGITS, "trainable.name=os:abort"],
        ["os:abort is a builtin_function_or_method, not a trainables.base.Task", "never calls it"]),
    "validate_reports_every_file": Case(["validate", "good.yaml", "list.yaml"],
        ["list.yaml: top level must be a mapping of sections, got list"],
        files={"good.yaml": GOOD, "list.yaml": "- a\n- b\n"}, stdout=["ok: good.yaml"]),
    "module_raises_on_import": Case(["validate", DIGITS, "trainable.name=badmod:TASK"],
        ["importing trainable module 'badmod' raised ValueError: boom at import"],
        files={"badmod.py": "raise ValueError('boom at import')\n"}),
    "module_exits_on_import": Case(["validate", DIGITS, "trainable.name=exitmod:TASK"],
        ["importing trainable module 'exitmod' raised SystemExit"],
        files={"exitmod.py": "import sys\nsys.exit(3)\n"}),
    "module_blocks_on_import": Case(["validate", DIGITS, "trainable.name=slowmod:TASK"],
        ["importing trainable module 'slowmod' took longer than 2 s (ACCELAB_IMPORT_TIMEOUT)"],
        files={"slowmod.py": "import time\nwhile True:\n    time.sleep(1)\n"},
        env={"ACCELAB_IMPORT_TIMEOUT": "2"}, max_wait_s=20),
    "module_not_found_says_where_modules_are_found": Case(
        ["train", DIGITS, "trainable.name=nope.mod:TASK"],
        ["cannot import trainable module 'nope.mod'", "working directory, on PYTHONPATH, or as installed packages"]),
    "unknown_trainable": Case(["train", DIGITS, "trainable.name=imagenet"],
        ["trainable.name: unknown trainable 'imagenet'"]),
    "model_args_wrong_type": Case(["train", MLP, "trainable.model_args.hidden=abc"],
        ["override 'trainable.model_args.hidden=abc': trainable.model_args: building digits/mlp with {'hidden': 'abc'} raised ValueError"]),
    "model_args_negative": Case(["train", MLP, "trainable.model_args.hidden=[-5]"],
        ["trainable.model_args: building digits/mlp with {'hidden': [-5]} raised RuntimeError", "negative dimension"]),
    # --- the tracking store, checked up front -------------------------------------------
    "tracking_server_unreachable": Case(["train", DIGITS, "tracking.uri=http://127.0.0.1:9"],
        ["override 'tracking.uri=http://127.0.0.1:9': tracking.uri: no MLflow server answers at http://127.0.0.1:9"],
        max_wait_s=20),
    "report_server_unreachable": Case(["report", "x", "--tracking-uri", "http://127.0.0.1:9"],
        ["--tracking-uri: no MLflow server answers at http://127.0.0.1:9"], max_wait_s=20),
    "tracking_file_store": Case(["train", DIGITS, "tracking.uri=./mlruns"],
        ["tracking.uri:", "mlruns: MLflow's file store is in maintenance mode", "use sqlite:///"]),
    "tracking_unknown_scheme": Case(["sweep", SWEEP, "tracking.uri=foo://bar"],
        ["tracking.uri: foo://bar: unknown scheme 'foo'"]),
    "tracking_folder_missing": Case(["train", DIGITS, "tracking.uri=sqlite:///no/such/dir/m.db"],
        ["tracking.uri: folder", "no/such/dir does not exist"]),
    "tracking_not_sqlite": Case(["train", DIGITS, "tracking.uri=sqlite:///notadb.db"],
        ["notadb.db is not an SQLite database"], files={"notadb.db": "hello\n"}),
    "tracking_read_only": Case(["train", DIGITS, "tracking.uri=sqlite:///ro/mlflow.db"],
        ["cannot create", "ro/mlflow.db: folder", "is read-only"],
        files={"ro/.keep": ""}, read_only="ro", as_plain_user=True),
    "report_never_creates_a_store": Case(["report", "no-such-experiment"],
        ["--tracking-uri: no MLflow store at", "mlflow.db (nothing has been tracked there)"]),
    "report_unknown_experiment": Case(["report", "no-such-experiment", "--tracking-uri", "sqlite:///empty.db"],
        ["no accelab sweep in MLflow experiment 'no-such-experiment'"],
        files={"empty.db": b""}),
    # --- measurement on a GPU, refused on this CPU-only machine --------------------------
    "measure_cuda_without_gpu": Case(["sweep", SWEEP, "measure.device=cuda", "measure.targets=[{runtime: torch}]",
                                      "sweep.variants=[{compression.prune.method: none}]"],
        ["override 'measure.device=cuda': measure.device: cuda, but torch sees no CUDA device on this machine"]),
    "measure_cuda_with_onnxruntime": Case(["validate", SWEEP, "measure.device=cuda"],
        ["measure.targets: onnxruntime targets are measured on the CPU; with measure.device=cuda list torch targets only"]),
    "sweep_cuda_finetune": Case(["validate", SWEEP, "measure.device=cuda", "measure.targets=[{runtime: torch}]"],
        ["sweep.variants[6]: finetune.epochs: 2, but a sweep measured on cuda cannot fine-tune yet"]),
    # --- the config file ----------------------------------------------------------------
    "random_bytes": Case(["train", "bin.yaml"], ["bin.yaml:1: not UTF-8 text (byte 0xff at offset 6)"],
        files={"bin.yaml": b"name: \xff\xfe\x00\x01garbage"}),
    "latin1": Case(["validate", "latin.yaml"], ["latin.yaml:2: not UTF-8 text", "save the file as UTF-8"],
        files={"latin.yaml": "name: x\n# caf\u00e9\n".encode("latin-1")}),
    "unreadable_file": Case(["validate", "secret.yaml"], ["secret.yaml: cannot read: Permission denied"],
        files={"secret.yaml": GOOD}, unreadable="secret.yaml", as_plain_user=True),
    "directory_as_config": Case(["train", "somedir"], ["somedir: is a directory, not a config file"],
        files={"somedir/.keep": ""}),
    "missing_file": Case(["train", "does/not/exist.yaml"], ["does/not/exist.yaml: no such config file"]),
    "empty_file": Case(["train", "empty.yaml"], ["empty.yaml: empty config file"],
        files={"empty.yaml": "# nothing here\n"}),
    "duplicate_keys": Case(["validate", "dup.yaml"],
        ["dup.yaml:4:1: YAML error: duplicate key 'train' (first on line 2)"],
        files={"dup.yaml": "name: d\ntrain:\n  epochs: 2\ntrain:\n  lr: 0.1\n"}),
    "yaml_syntax": Case(["train", "syn.yaml"], ["syn.yaml:4:", "YAML error"],
        files={"syn.yaml": "name: x\ntrain:\n  epochs: [1, 2\n  lr: 0.1\n"}),
    "epochs_absurd": Case(["train", DIGITS, "train.epochs=1e9"],
        ["override 'train.epochs=1e9': train.epochs: Input should be"]),
    "unknown_key": Case(["train", DIGITS, "train.colour=red"], ["train.colour: unknown key"]),
    "wrong_type": Case(["train", DIGITS, "train.epochs=many"], ["train.epochs: Input should be a valid integer"]),
    "zero_workers": Case(["train", DIGITS, "scaling.num_workers=0"],
        ["scaling.num_workers: Input should be greater than or equal to 1"]),
    "override_named_as_override": Case(["train", DIGITS, "train.epochs=-1"],
        ["override 'train.epochs=-1': train.epochs: Input should be greater than or equal to 1"],
        not_expected=[f"{DIGITS}: train.epochs"]),
    "schema_and_cross_field_errors_at_once": Case(["validate", "both.yaml"],
        ["both.yaml: train.epochs: Input should be greater than or equal to 1",
         "both.yaml: compression.quant.mode: qat needs quant.bits <= 8"],
        files={"both.yaml": "train: {epochs: -1}\ncompression: {quant: {mode: qat}}\n"}),
    "bad_override": Case(["train", DIGITS, "train.epochs"], ["override 'train.epochs': expected dotted.key=value"]),
    # --- the command line itself --------------------------------------------------------
    "train_without_arguments": Case(["train"], ["usage: accelab train CONFIG", "the following arguments are required: config"],
        not_expected=["key.sub=value,"]),
    "train_unknown_option": Case(["train", DIGITS, "--epochs", "3"],
        ["usage: accelab train CONFIG", "accelab train: error: unrecognized arguments: --epochs 3"]),
    "compress_without_from": Case(["compress", MLP], ["the following arguments are required: --from"]),
    # --- checkpoints and runs given with --from -----------------------------------------
    "from_bad_meta_json": Case(["compress", MLP, "--from", "ck", "trainable.model_args.hidden=[32]"],
        ["ck/meta.json: not valid JSON"], files={"ck/meta.json": "{not json", "ck/model.safetensors": "x"}),
    "from_truncated_weights": Case(["compress", MLP, "--from", "ck", "trainable.model_args.hidden=[32]"],
        ["ck/model.safetensors: not a readable safetensors file"],
        files={"ck/meta.json": CKPT_META, "ck/model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"}),
    "from_unknown_run_without_store": Case(["compress", MLP, "--from", f"runs:/{BAD_ID}"],
        [f"--from runs:/{BAD_ID}: no MLflow store at"]),
    "from_missing_directory": Case(["compress", MLP, "--from", "no/such/ckpt"],
        ["--from no/such/ckpt: no such checkpoint directory"]),
    "sparsity_one": Case(["compress", MLP, "--from", "x", "compression.prune.sparsity=1.0"],
        ["override 'compression.prune.sparsity=1.0': compression.prune.sparsity: Input should be less than 1 (got 1.0)"]),
    "sparsity_negative": Case(["compress", MLP, "--from", "x", "compression.prune.sparsity=-0.1"],
        ["compression.prune.sparsity: Input should be greater than or equal to 0"]),
    "bits_12": Case(["compress", MLP, "--from", "x", "compression.quant.bits=12"],
        ["compression.quant.bits: Input should be 2, 3, 4, 5, 6, 7, 8, 16 or 32 (got 12)"]),
    "exclude_unknown_layer": Case(["compress", MLP, "--from", "x", "compression.prune.exclude=[nosuchlayer]"],
        ["compression.prune.exclude: no such layer ['nosuchlayer']"]),
    "structured_removes_every_channel": Case(["compress", MLP, "--from", "x",
        "trainable.model_args.hidden=[1,1]", "compression.prune.sparsity=0.6"],
        ["compression.prune.sparsity: 0.6 would remove every channel of layer '1'", "layer '3'"]),
    "resume_unknown": Case(["train", DIGITS, "--resume-run", "no-such-run", "tracking.uri=sqlite:///empty.db"],
        ["--resume: no unfinished MLflow record of run 'no-such-run'"], files={"empty.db": b""}),
    # --- resources and sweeps -------------------------------------------------------------
    "too_many_workers": Case(["train", DIGITS, "scaling.num_workers=64"],
        ["scaling.num_workers: 64 workers x {CPU=1} (PACK) can never fit this machine"]),
    "sweep_too_many_workers": Case(["sweep", SWEEP, "scaling.num_workers=8"], ["scaling.num_workers: 8 workers"]),
    "sweep_without_section": Case(["sweep", DIGITS], ["sweep: this config has no sweep section"]),
    "sweep_unknown_key": Case(["sweep", SWEEP, "sweep.space={compression.prune.sparsityy: {grid: [0.5]}}"],
        ["compression.prune.sparsityy: unknown key"]),
    "sweep_bad_value": Case(["sweep", SWEEP, "sweep.variants=[{compression.prune.method: none}]",
        "sweep.space={compression.quant.bits: {grid: [8, 12]}}"],
        ["override 'sweep.space={compression.quant.bits: {grid: [8, 12]}}': sweep.space.compression.quant.bits: "
         "at compression.quant.bits=12: compression.quant.bits: Input should be"]),
    "sweep_optuna_grid": Case(["sweep", SWEEP, "sweep.search=optuna"], ["grids are not supported by search=optuna"]),
    "sweep_random_range_end_invalid": Case(["validate", SWEEP, "sweep.space={train.lr: {uniform: [0.0, 0.1]}}"],
        ["sweep.space.train.lr: at train.lr=0.0", "train.lr: Input should be greater than 0"]),
    "sweep_variants_that_fail_or_do_nothing": Case(["validate", SWEEP,
        "sweep.variants=[{compression.prune.method: unstructured, compression.prune.sparsity: 0}, "
        "{compression.quant.mode: qat}, "
        "{compression.prune.method: structured, compression.prune.sparsity: 0.9995}, "
        "{compression.prune.schedule: cubic, finetune.epochs: 2}]", "sweep.space={compression.quant.bits: {grid: [32, 8]}}"],
        ["override 'sweep.variants=[{compression.prune.method: unstructured, ...': sweep.variants[0]: "
         "at compression.quant.bits=32: compression.prune.sparsity: must be > 0",
         "sweep.variants[1]: at compression.quant.bits=32: compression.quant.mode: qat needs",
         "sweep.variants[2]: at compression.quant.bits=32: compression.prune.sparsity: 0.9995 would remove every channel",
         "sweep.variants[3]: at compression.quant.bits=32: compression.prune.schedule: cubic needs prune.method=unstructured"]),
    "sweep_choices_combine_before_judging": Case(["validate", SWEEP, "sweep.variants=[]", "sweep.search=optuna",
        "sweep.space={compression.prune.method: {choice: [structured]}, compression.prune.sparsity: {uniform: [0.0, 0.6]}}"],
        ["sweep.space.compression.prune.sparsity: at compression.prune.sparsity=0.0, compression.prune.method='structured': "
         "compression.prune.sparsity: must be > 0"],
        not_expected=["at compression.prune.method='structured':"]),
    "sweep_measure_threads_too_many": Case(["sweep", SWEEP, "measure.threads=64"],
        ["measure.threads: 64 threads per trial exceed every node of this machine"]),
    # --- checked before Ray, not after the sweep (#17) ----------------------------------
    "registry_alias_invalid": Case(["sweep", SWEEP, "registry.alias=bad alias!"],
        ["override 'registry.alias=bad alias!': registry.alias: Invalid alias name: 'bad alias!'. "
         "Names may only contain alphanumerics"]),
    "registry_alias_reserved": Case(["sweep", SWEEP, "registry.alias=v3"],
        ["registry.alias: Version alias name 'v3' is reserved"]),
    "registry_model_name_invalid": Case(["sweep", SWEEP, "registry.model_name=team:model"],
        ["registry.model_name: Invalid model name 'team:model'. Names cannot contain '/' or ':'"]),
    "storage_path_read_only": Case(["train", DIGITS, "run.storage_path=ro/results"],
        ["override 'run.storage_path=ro/results': run.storage_path:", "ro/results is not writable by this user"],
        files={"ro/.keep": ""}, read_only="ro", as_plain_user=True),
    "storage_path_is_a_file": Case(["sweep", SWEEP, "run.storage_path=afile/results"],
        ["run.storage_path:", "afile/results is under", "afile, which is not a directory"], files={"afile": "x"}),
    "run_name_escapes_storage": Case(["train", DIGITS, "run.name=../../escape/x"],
        ["override 'run.name=../../escape/x': run.name: '../../escape/x' must be a plain name"]),
    "train_measure_cuda_without_gpu": Case(["train", DIGITS, "measure.device=cuda", "measure.targets=[{runtime: torch}]"],
        ["override 'measure.device=cuda': measure.device: cuda, but torch sees no CUDA device on this machine"]),
    "import_timeout_not_a_number": Case(["train", DIGITS],
        ["ACCELAB_IMPORT_TIMEOUT: 'abc' is not a positive number of seconds"], env={"ACCELAB_IMPORT_TIMEOUT": "abc"}),
    "space_override_with_a_dotted_name": Case(["validate", SWEEP, "sweep.variants=[{compression.prune.method: none}]",
        "sweep.space.compression.quant.bits={grid: [32, 1]}"],
        ["sweep.space.compression.quant.bits: at compression.quant.bits=1: compression.quant.bits: Input should be"],
        not_expected=["unknown key"]),
    # --- reports, comparisons and syncs of what is recorded -------------------------------
    "report_run_is_a_trial": Case(["report", "exp", *STORE, "--run", "{trial}"],
        ["--run {trial}: a trial run of sweep run {exp_sweep} (give that one), not a sweep"], setup=sweep_store),
    "report_newest_sweep_failed": Case(["report", "failing", *STORE],
        ["sweep failing-failed (MLflow run {failing_failed}) failed: RuntimeError: boom in finish; it has no "
         "frontier or recommendation", "the newest finished sweep: accelab report failing --run {failing_sweep}"],
        setup=sweep_store),
    "compare_unknown_target": Case(["compare", "{exp_sweep}", "{exp_sweep}", *STORE, "--target", "ort_b99"],
        ["--target ort_b99: sweep exp-sweep", "measured no such target; its targets are torch_b64, ort_b1"],
        setup=sweep_store),
    "sync_truncated_weights": Case(["sync", "ck"],
        ["ck/model.safetensors: not a readable safetensors file", "nothing was synced"],
        files={"ck/meta.json": CKPT_META, "ck/model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"}),
}  # fmt: skip


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with each "{name}" of ``values`` replaced (other braces are YAML)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def prepare(case: Case, folder: Path) -> tuple[list[str], dict[str, str]]:
    """The case's folder with its files (and store), the command, the placeholders' values."""
    folder.mkdir(parents=True)
    values = case.setup(folder) if case.setup else {}
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.unreadable:
        os.chmod(folder / case.unreadable, 0)
    if case.read_only:
        os.chmod(folder / case.read_only, 0o555)
    prefix = DROP_DAC if case.as_plain_user and os.geteuid() == 0 else []
    args = [fill(a, values) for a in case.args]
    return [*prefix, sys.executable, "-m", "accelab", *args], values


# Runs the command and writes the CPU seconds it used (itself and its children) to argv[1].
CPU_TIMER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(str(u.ru_utime + u.ru_stime))\n"
    "sys.exit(code)\n"
)


HANG_S = 300  # a hang guard only: on a loaded machine a fresh interpreter is slow, not hung
# a command that fails right after start-up and config loading (exit 2), timed next to each
# case with ``max_wait_s``
REFERENCE = ["train", DIGITS, "trainable.name=imagenet"]


@dataclass
class Outcome:
    folder: Path
    proc: subprocess.CompletedProcess
    cpu_s: float
    wall_s: float
    values: dict[str, str]
    reference_wall_s: float | None = None


def timed(cmd: list[str], folder: Path, env: dict[str, str], cpu_file: Path):
    """(completed process, wall seconds) of ``accelab <cmd>``; its CPU seconds go to ``cpu_file``."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CPU_TIMER, str(cpu_file), *cmd], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=HANG_S)  # fmt: skip
    return proc, time.monotonic() - start


def run_case(name: str, root: Path) -> tuple[str, Outcome]:
    case, folder = CASES[name], root / name
    cmd, values = prepare(case, folder)
    env = {**os.environ, "RAY_TMPDIR": str(folder / "ray_tmp"), "PYTHONPATH": str(REPO), **case.env}
    reference = None
    with ThreadPoolExecutor(max_workers=2) as pool:
        if case.max_wait_s is not None:  # started together: the same load for both
            ref_folder = root / f"{name}.reference"
            ref_folder.mkdir()
            ref_env = {**env, "RAY_TMPDIR": str(ref_folder / "ray_tmp")}
            ref_args = [sys.executable, "-m", "accelab", *REFERENCE]
            reference = pool.submit(timed, ref_args, ref_folder, ref_env, root / f"{name}.ref.cpu")
        proc, wall = timed(cmd, folder, env, root / f"{name}.cpu")
        ref_wall = None
        if reference is not None:
            ref_proc, ref_wall = reference.result()
            assert ref_proc.returncode == 2, ref_proc.stderr  # it failed as planned, not sooner
    return name, Outcome(folder, proc, float((root / f"{name}.cpu").read_text()), wall, values,
                         ref_wall)  # fmt: skip


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict[str, Outcome]:
    """The selected cases (all, or those ``-k`` picks), three at a time (each is a fresh
    interpreter importing torch and MLflow)."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.fail("running as root needs setpriv (util-linux) for the permission cases")
    root = tmp_path_factory.mktemp("cli_errors")
    selected = sorted({item.callspec.params["name"] for item in request.session.items
                       if getattr(item, "callspec", None) and item.callspec.params.get("name") in CASES})  # fmt: skip
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(lambda n: run_case(n, root), selected))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_one_clear_message(name: str, results):
    case = CASES[name]
    out = results[name]
    folder, proc = out.folder, out.proc
    assert proc.returncode == 2, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    for text in case.expected:
        assert fill(text, out.values) in proc.stderr, proc.stderr
    for text in case.not_expected:
        assert text not in proc.stderr, proc.stderr
    for text in case.stdout:
        assert text in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "INFO" not in proc.stderr  # no MLflow/alembic chatter
    assert out.cpu_s < case.max_seconds, f"used {out.cpu_s:.1f} CPU s"
    if case.max_wait_s is not None:  # its own waiting, not the machine's load
        waited = out.wall_s - out.reference_wall_s
        assert waited < case.max_wait_s, (
            f"took {out.wall_s:.1f} s, {waited:.1f} s more than `accelab {' '.join(REFERENCE)}` "
            "started alongside"
        )
    # Nothing started, nothing recorded: no Ray session, no MLflow store, run or artifact.
    assert not (folder / "ray_tmp").exists(), "a Ray session was started"
    given = {n.split("/")[0] for n in case.files} | ({"mlflow.db"} if case.setup else set())
    created = {p.name for p in folder.iterdir()} - given
    assert not created & {"mlflow.db", "mlruns", "mlartifacts", "accelab_results"}, created


def test_every_subcommand_has_help(tmp_path: Path):
    from accelab.cli import build_parser

    _, subs = build_parser()
    for command in subs:
        proc = subprocess.run([sys.executable, "-m", "accelab", command, "--help"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=HANG_S)  # fmt: skip
        assert proc.returncode == 0 and f"usage: accelab {command}" in proc.stdout
    top = subprocess.run([sys.executable, "-m", "accelab", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=HANG_S)  # fmt: skip
    for line in top.stdout.split("examples:")[1].splitlines():
        for word in line.split():
            if word.startswith("configs/") and word.endswith(".yaml") and "*" not in word:
                assert (REPO / word).is_file(), f"--help names a missing file {word}"


def test_a_user_module_in_the_working_directory_is_found(tmp_path: Path):
    (tmp_path / "mytask.py").write_text("from trainables.digits import TASK\n")
    """Through the installed ``accelab`` script (``python -m`` would add the folder itself)."""
    script = shutil.which("accelab")
    assert script, "the accelab console script is not installed"
    proc = subprocess.run([script, "validate", DIGITS, "trainable.name=mytask:TASK"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=HANG_S,
                          env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"ok: {DIGITS}" in proc.stdout


def test_failure_hints_name_only_what_was_started():
    from accelab import started

    saved = (list(started.mlflow_runs), started.ray_logs)
    try:
        started.mlflow_runs.clear()
        started.ray_logs = None
        assert started.hints() == []
        started.mlflow_runs.append(("sqlite:///x.db", "abc"))
        assert started.hints() == ["the MLflow run abc (sqlite:///x.db) holds what was recorded"]
    finally:
        started.mlflow_runs[:] = saved[0]
        started.ray_logs = saved[1]
