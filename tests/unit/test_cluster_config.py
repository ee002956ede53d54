"""cluster.yaml and k8s/rayjob.yaml: valid, complete, and secure by default.

Fast and offline: no network, no Ray processes. cluster.yaml goes through Ray's own
validator the way ``ray up`` runs it, minus the two cloud steps, with every AWS API call
turned into a failure. A security lint (one small function per rule) must pass on the
shipped files, and every rule is proven by planting its regression in a copy.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CLUSTER_YAML = REPO / "cluster.yaml"
RAYJOB_YAML = REPO / "k8s" / "rayjob.yaml"

COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
SECRET_NAMES = (
    "RAY_AUTH_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)
WORLD = {"0.0.0.0/0", "::/0"}
# 0.0.0.0 as an address (not the 0.0.0.0/0 CIDR), or :: / [::] / * given as a bind host.
BIND_ALL = re.compile(
    r"(?<![\d.])0\.0\.0\.0(?![\d./])"
    r"|--(?:dashboard-)?host[= ]+[\"']?(?:::|\[::\]|\*)(?=[\"'\s]|$)"
)
SECRET_ASSIGNMENT = re.compile(
    r"\b(" + "|".join(SECRET_NAMES) + r")\b[\"']?\s*[=:]\s*[\"']?([^\s\"'#,}]*)"
)


# ---------------------------------------------------------------- helpers


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def strings(node) -> Iterator[str]:
    """Every string in a parsed YAML document, keys included (comments are gone)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def commands(cfg: dict) -> list[str]:
    return [cmd for key in COMMAND_LISTS for cmd in cfg.get(key) or []]


def statements(cmd: str) -> list[str]:
    """Shell statements of one command, split on ; && || and newlines."""
    return [s.strip() for s in re.split(r";|&&|\|\||\n", cmd) if s.strip()]


def mlflow_commands(cfg: dict) -> list[str]:
    return [cmd for cmd in commands(cfg) if "mlflow server" in cmd]


# ---------------------------------------------------------------- lint rules
# Each rule returns a list of problems, each starting with the rule's name.


def binds_all_interfaces(doc) -> list[str]:
    """No service (dashboard, MLflow, anything) listens on every interface."""
    problems = []
    for s in strings(doc):
        for m in BIND_ALL.finditer(s):
            around = s[max(0, m.start() - 40) : m.end() + 10].strip()
            problems.append(f"bind: {m.group(0)!r} binds all interfaces (...{around}...)")
    return problems


def world_ingress_beyond_ssh(cfg: dict) -> list[str]:
    """From 0.0.0.0/0 or ::/0 only SSH (tcp/22) may come in."""
    group = (cfg.get("provider") or {}).get("security_group") or {}
    problems = []
    for perm in group.get("IpPermissions") or []:
        cidrs = {r.get("CidrIp") for r in perm.get("IpRanges") or []}
        cidrs |= {r.get("CidrIpv6") for r in perm.get("Ipv6Ranges") or []}
        ssh_only = perm.get("IpProtocol") == "tcp" and perm.get("FromPort") == 22 == perm.get(
            "ToPort"
        )
        if cidrs & WORLD and not ssh_only:
            problems.append(f"ingress: {perm} is open to the world beyond SSH")
    return problems


def token_auth_off(cfg: dict) -> list[str]:
    """Every `ray start`, head and worker, runs with RAY_AUTH_MODE=token; nothing disables it."""
    problems = []
    for role in ("head", "worker"):
        starts = 0
        for cmd in cfg.get(f"{role}_start_ray_commands") or []:
            exported = False
            for stmt in statements(cmd):
                if re.fullmatch(r"export\s+RAY_AUTH_MODE=[\"']?token[\"']?", stmt):
                    exported = True
                if "ray start" in stmt:
                    starts += 1
                    prefix = stmt[: stmt.index("ray start")]
                    if not (exported or re.search(r"\bRAY_AUTH_MODE=[\"']?token\b", prefix)):
                        problems.append(
                            f"token-auth: {role} `{stmt[:60]}...` lacks RAY_AUTH_MODE=token"
                        )
        if not starts:
            problems.append(f"token-auth: no `ray start` in {role}_start_ray_commands")
    for cmd in commands(cfg):
        for mode in re.findall(r"\bRAY_AUTH_MODE=[\"']?(\w*)", cmd):
            if mode != "token":
                problems.append(f"token-auth: RAY_AUTH_MODE={mode} in {cmd[:60]!r}")
    return problems


def token_not_from_file_mount(cfg: dict) -> list[str]:
    """The token reaches the nodes by file_mounts from the user's ~/.ray/auth_token."""
    user = (cfg.get("auth") or {}).get("ssh_user", "ubuntu")
    targets = {f"/home/{user}/.ray/auth_token", "~/.ray/auth_token"}
    home_token = Path("~/.ray/auth_token").expanduser()
    for remote, local in (cfg.get("file_mounts") or {}).items():
        if remote in targets and Path(local).expanduser() == home_token:
            return []
    return ["token-file: no file_mounts entry copies ~/.ray/auth_token to ~/.ray/auth_token"]


def mlflow_host_check_off(cfg: dict) -> list[str]:
    """MLflow keeps its Host-header check (DNS-rebinding protection)."""
    problems = []
    for cmd in mlflow_commands(cfg):
        if "--disable-security-middleware" in cmd:
            problems.append("mlflow-host-check: --disable-security-middleware")
        for hosts in re.findall(r"--allowed-hosts[= ]+[\"']?([^\"'\s]+)", cmd):
            if "*" in hosts.split(","):
                problems.append(f"mlflow-host-check: --allowed-hosts {hosts}")
    return problems


def committed_secrets(text: str) -> list[str]:
    """No token or password written in a committed file (comments count too). Shell
    references ($VAR, $(cat file)) and <placeholders> are fine."""
    return [
        f"secret: {m.group(1)} has a literal value"
        for m in SECRET_ASSIGNMENT.finditer(text)
        if m.group(2) and not m.group(2).startswith(("$", "<"))
    ]


def k8s_env_secrets(doc) -> list[str]:
    """No `- name: RAY_AUTH_TOKEN  value: ...` in a pod spec (valueFrom a Secret is fine)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") in SECRET_NAMES and node.get("value"):
                found.append(f"secret: env {node['name']} has a literal value")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return found


def tracked_token_files(repo: Path) -> list[str] | None:
    """No file named auth_token is tracked by git. None when `repo` is not a git checkout."""
    if shutil.which("git") is None:
        return None
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return None
    return [
        f"committed-token: {path} is tracked by git"
        for path in out.stdout.split("\0")
        if path and Path(path).name == "auth_token"
    ]


def k8s_token_auth_off(doc: dict) -> list[str]:
    """RayJob: KubeRay token auth on, and no pod or job env turning it off."""
    spec = (doc.get("spec") or {}).get("rayClusterSpec") or {}
    mode = (spec.get("authOptions") or {}).get("mode")
    problems = [] if mode == "token" else [f"token-auth: rayClusterSpec.authOptions.mode={mode}"]
    for s in strings(doc):
        for value in re.findall(r"\bRAY_AUTH_MODE\b[\"']?\s*[=:]\s*[\"']?(\w*)", s):
            if value != "token":
                problems.append(f"token-auth: RAY_AUTH_MODE={value}")

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == "RAY_AUTH_MODE" and node.get("value", "token") != "token":
                problems.append(f"token-auth: env RAY_AUTH_MODE={node.get('value')}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return problems


def k8s_exposed(docs: list[dict]) -> list[str]:
    """Nothing reachable from outside the Kubernetes cluster: no LoadBalancer/NodePort
    Service, no ingress, head Service ClusterIP."""
    problems = []
    for doc in docs:
        if doc.get("kind") == "Service" and (doc.get("spec") or {}).get("type") in (
            "LoadBalancer",
            "NodePort",
        ):
            problems.append(f"exposure: Service of type {doc['spec']['type']}")
        if doc.get("kind") == "Ingress":
            problems.append("exposure: Ingress")
        head = ((doc.get("spec") or {}).get("rayClusterSpec") or {}).get("headGroupSpec") or {}
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"exposure: headGroupSpec.serviceType={head['serviceType']}")
        if head.get("enableIngress"):
            problems.append("exposure: headGroupSpec.enableIngress")
        service = (head.get("headService") or {}).get("spec") or {}
        if service.get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"exposure: headService type {service['type']}")
    return problems


def lint_cluster(cfg: dict, text: str | None = None) -> list[str]:
    """All cluster.yaml rules. ``text`` is the file as committed (comments included)."""
    return [
        *binds_all_interfaces(cfg),
        *world_ingress_beyond_ssh(cfg),
        *token_auth_off(cfg),
        *token_not_from_file_mount(cfg),
        *mlflow_host_check_off(cfg),
        *committed_secrets(yaml.safe_dump(cfg, width=10**6) if text is None else text),
    ]


def lint_rayjob(text: str) -> list[str]:
    """All k8s/rayjob.yaml rules, over every document of the file."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    rayjobs = [d for d in docs if d.get("kind") == "RayJob"]
    problems = [] if rayjobs else ["token-auth: no RayJob document"]
    for doc in docs:
        problems += binds_all_interfaces(doc) + k8s_env_secrets(doc)
    for doc in rayjobs:
        problems += k8s_token_auth_off(doc)
    return problems + k8s_exposed(docs) + committed_secrets(text)


# ---------------------------------------------------------------- Ray's validator


@pytest.fixture
def no_aws(monkeypatch) -> list[str]:
    """Any AWS API call (or any botocore HTTP request) fails the test."""
    calls: list[str] = []
    try:
        import botocore.client
        import botocore.endpoint
    except ImportError:  # no botocore: nothing can reach AWS
        return calls

    def api_call(self, operation_name, api_params):
        calls.append(operation_name)
        pytest.fail(f"AWS API call attempted: {operation_name}")

    def http(self, *args, **kwargs):
        calls.append("http")
        pytest.fail("botocore HTTP request attempted")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", api_call)
    monkeypatch.setattr(botocore.endpoint.Endpoint, "make_request", http)
    return calls


def ray_up_offline(raw: dict) -> dict:
    """What `ray up` does to the config before touching the cloud: provider lookup,
    prepare_config (defaults, merged setup commands, node-type min/max), validate_config
    (ray-schema.json + semantic checks). Skipped, because they call AWS:
    fillout_available_node_types_resources and bootstrap_config (IAM, key pair, subnets,
    security group, AMI)."""
    from ray.autoscaler._private.providers import _NODE_PROVIDERS
    from ray.autoscaler._private.util import prepare_config, validate_config

    assert raw["provider"]["type"] in _NODE_PROVIDERS
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


@pytest.fixture
def validated(no_aws) -> dict:
    cfg = ray_up_offline(load(CLUSTER_YAML))
    assert no_aws == []
    return cfg


def test_cluster_yaml_passes_rays_validator(validated):
    assert validated["head_node_type"] in validated["available_node_types"]


# ---------------------------------------------------------------- cluster.yaml facts


def test_cpu_head_and_gpu_workers_that_scale_to_zero(validated):
    types = validated["available_node_types"]
    head = types[validated["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_workers = [
        t
        for name, t in types.items()
        if name != validated["head_node_type"] and t["resources"].get("GPU", 0) >= 1
    ]
    assert gpu_workers and all(t["min_workers"] == 0 for t in gpu_workers)
    assert validated["idle_timeout_minutes"] > 0
    assert all(
        "--num-gpus=0" in c for c in validated["head_start_ray_commands"] if "ray start" in c
    )


def test_setup_installs_the_project_like_the_readme(validated):
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        script = "\n".join(validated[key])
        assert "torch==2.13.0" in script and "pip install" in script
        assert script.index("torch==2.13.0") < script.index("-e "), "torch first, then the project"
        assert re.search(r"-e \"?/home/ubuntu/accelab\[cluster\]", script)
        assert re.search(r"ray\[default\]==2\.60\.0", script), "ray pinned, with the Jobs API"
    assert validated["file_mounts"]["/home/ubuntu/accelab"] in (".", "./")
    for name in (".git", "__pycache__", "mlflow.db", "mlruns", "mlartifacts", "accelab_results"):
        assert name in validated["rsync_exclude"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_head_exports_storage_and_tracking_uri_once(tmp_path):
    """Run the head's env-file commands twice (as a re-run `ray up` would), with a fake
    `hostname`: the file is rewritten, ~/.bashrc sources it exactly once."""
    cfg = load(CLUSTER_YAML)
    env_cmds = [c for c in cfg["head_setup_commands"] if "accelab_env" in c]
    assert env_cmds
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hostname").write_text("#!/bin/sh\necho '10.0.1.23 fd00::1 '\n")
    (bin_dir / "hostname").chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    for _ in range(2):
        for cmd in env_cmds:
            subprocess.run(["bash", "-c", cmd], env=env, check=True, timeout=30)
    bashrc = (tmp_path / ".bashrc").read_text()
    assert len([line for line in bashrc.splitlines() if "accelab_env" in line]) == 1
    out = subprocess.run(
        ["bash", "-c", ". ~/.bashrc; echo $ACCELAB_STORAGE_PATH; echo $MLFLOW_TRACKING_URI"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert out[0].startswith("s3://") and out[0].endswith("/runs")
    assert out[1] == "http://10.0.1.23:5000"
    assert len((tmp_path / ".accelab_env").read_text().splitlines()) == 3  # written, not appended


def test_mlflow_server_on_the_head(validated):
    starts = validated["head_start_ray_commands"]
    ray_at = next(i for i, c in enumerate(starts) if "ray start" in c)
    (cmd,) = mlflow_commands(validated)
    assert starts.index(cmd) > ray_at, "MLflow starts after `ray start`"
    assert re.search(r"--backend-store-uri \"?(sqlite|postgresql)", cmd), "a database backend"
    assert "--serve-artifacts" in cmd and "--artifacts-destination" in cmd
    assert re.search(r"--host \"?\$IP\"?", cmd) and "IP=$(hostname -I | cut -d' ' -f1)" in cmd
    assert "--port 5000" in cmd and "--workers 2" in cmd
    assert re.search(r"--allowed-hosts \"\$IP:5000,\$IP,localhost:5000,127\.0\.0\.1:5000\"", cmd)
    assert "nohup" in cmd and re.search(r">\s*\S+\.log", cmd)
    text = CLUSTER_YAML.read_text()
    for doc in (
        "--app-name basic-auth",
        "mlflow[auth]",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_TRACKING_USERNAME",
        "PostgreSQL",
    ):
        assert doc in text, f"{doc} is documented"


def test_dashboard_on_loopback(validated):
    (head_start,) = [c for c in validated["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start


# ---------------------------------------------------------------- security lint: shipped files


def test_cluster_yaml_passes_the_security_lint():
    assert lint_cluster(load(CLUSTER_YAML), CLUSTER_YAML.read_text()) == []


def test_rayjob_passes_the_security_lint():
    assert lint_rayjob(RAYJOB_YAML.read_text()) == []


def test_no_auth_token_tracked_by_git():
    problems = tracked_token_files(REPO)
    if problems is None:
        pytest.skip("not a git checkout")
    assert problems == []


# ---------------------------------------------------------------- security lint: planted


def _edit_start(role: str, old: str, new: str) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        key = f"{role}_start_ray_commands"
        hits = [i for i, c in enumerate(cfg[key]) if old in c]
        assert hits, f"{old!r} not in {key}"
        cfg[key][hits[0]] = cfg[key][hits[0]].replace(old, new)

    return edit


def _add_ingress(perm: dict) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        cfg["provider"]["security_group"]["IpPermissions"].append(perm)

    return edit


def _append(key: str, cmd: str) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        cfg[key] = [*(cfg.get(key) or []), cmd]

    return edit


def _set_mount(remote: str, local: str | None) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        cfg["file_mounts"].pop("/home/ubuntu/.ray/auth_token")
        if local is not None:
            cfg["file_mounts"][remote] = local

    return edit


CLUSTER_REGRESSIONS = {
    "dashboard-host=0.0.0.0": (
        _edit_start("head", "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
        "bind",
    ),
    "dashboard-host 0.0.0.0": (
        _edit_start("head", "--dashboard-host=127.0.0.1", "--dashboard-host 0.0.0.0"),
        "bind",
    ),
    "mlflow --host 0.0.0.0": (_edit_start("head", '--host "$IP"', "--host 0.0.0.0"), "bind"),
    "mlflow --host ::": (_edit_start("head", '--host "$IP"', "--host ::"), "bind"),
    "ingress all traffic": (
        _add_ingress({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}),
        "ingress",
    ),
    "ingress dashboard": (
        _add_ingress(
            {
                "FromPort": 8265,
                "ToPort": 8265,
                "IpProtocol": "tcp",
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ),
        "ingress",
    ),
    "ingress mlflow ipv6": (
        _add_ingress(
            {
                "FromPort": 5000,
                "ToPort": 5000,
                "IpProtocol": "tcp",
                "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
            }
        ),
        "ingress",
    ),
    "ingress range over 22": (
        _add_ingress(
            {
                "FromPort": 22,
                "ToPort": 8265,
                "IpProtocol": "tcp",
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ),
        "ingress",
    ),
    "head token auth missing": (_edit_start("head", "RAY_AUTH_MODE=token ", ""), "token-auth"),
    "worker token auth missing": (_edit_start("worker", "RAY_AUTH_MODE=token ", ""), "token-auth"),
    "head token auth disabled": (
        _edit_start("head", "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled"),
        "token-auth",
    ),
    "worker token auth disabled": (
        _edit_start("worker", "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled"),
        "token-auth",
    ),
    "auth disabled in bashrc": (
        _append("setup_commands", "echo 'export RAY_AUTH_MODE=disabled' >> ~/.bashrc"),
        "token-auth",
    ),
    "token not mounted": (_set_mount("", None), "token-file"),
    "token from the repo": (
        _set_mount("/home/ubuntu/.ray/auth_token", "./auth_token"),
        "token-file",
    ),
    "token mounted elsewhere": (_set_mount("/tmp/auth_token", "~/.ray/auth_token"), "token-file"),
    "literal RAY_AUTH_TOKEN": (
        _edit_start("worker", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=3f9c2a7d RAY_AUTH_MODE=token"),
        "secret",
    ),
    "literal MLFLOW_TRACKING_PASSWORD": (
        _append(
            "head_setup_commands",
            "echo 'export MLFLOW_TRACKING_PASSWORD=hunter2hunter2' >> ~/.accelab_env",
        ),
        "secret",
    ),
    "mlflow --allowed-hosts *": (
        _edit_start("head", '--allowed-hosts "$IP:5000,', '--allowed-hosts "*,'),
        "mlflow-host-check",
    ),
    "mlflow security middleware off": (
        _edit_start("head", "--workers 2", "--workers 2 --disable-security-middleware"),
        "mlflow-host-check",
    ),
}


@pytest.mark.parametrize("case", CLUSTER_REGRESSIONS, ids=str)
def test_lint_catches_planted_cluster_regression(case):
    plant, rule = CLUSTER_REGRESSIONS[case]
    cfg = load(CLUSTER_YAML)
    plant(cfg)
    problems = lint_cluster(cfg)
    assert any(p.startswith(f"{rule}:") for p in problems), problems


@pytest.mark.parametrize(
    "line",
    [
        "# RAY_AUTH_TOKEN: 3f9c2a7d1b",
        "#   export MLFLOW_TRACKING_PASSWORD=hunter2hunter2",
        '# MLFLOW_AUTH_ADMIN_PASSWORD="correct-horse-battery"',
    ],
)
def test_lint_catches_a_secret_in_a_comment(line):
    text = CLUSTER_YAML.read_text() + line + "\n"
    assert any(p.startswith("secret:") for p in lint_cluster(load(CLUSTER_YAML), text))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("path", ["auth_token", ".ray/auth_token", "k8s/auth_token"])
def test_lint_catches_a_tracked_token_file(tmp_path, path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text("not-a-real-token\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "-f", path], check=True)
    problems = tracked_token_files(tmp_path)
    assert problems and problems[0].startswith("committed-token:")


def _rayjob_edit(edit: Callable[[dict], None]) -> Callable[[str], str]:
    def plant(text: str) -> str:
        doc = yaml.safe_load(text)
        edit(doc)
        return yaml.safe_dump(doc)

    return plant


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"]


def _runtime_env_var(name: str, value: str) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        env["env_vars"][name] = value
        doc["spec"]["runtimeEnvYAML"] = yaml.safe_dump(env)

    return edit


def _worker_env(name: str, value: str) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        container = _cluster_spec(doc)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        container.setdefault("env", []).append({"name": name, "value": value})

    return edit


RAYJOB_REGRESSIONS = {
    "auth mode disabled": (
        _rayjob_edit(lambda d: _cluster_spec(d)["authOptions"].update(mode="disabled")),
        "token-auth",
    ),
    "auth options removed": (
        _rayjob_edit(lambda d: _cluster_spec(d).pop("authOptions")),
        "token-auth",
    ),
    "RAY_AUTH_MODE=disabled in a pod": (
        _rayjob_edit(_worker_env("RAY_AUTH_MODE", "disabled")),
        "token-auth",
    ),
    "RAY_AUTH_MODE disabled in the job env": (
        _rayjob_edit(_runtime_env_var("RAY_AUTH_MODE", "disabled")),
        "token-auth",
    ),
    "dashboard-host 0.0.0.0": (
        _rayjob_edit(
            lambda d: _cluster_spec(d)["headGroupSpec"]["rayStartParams"].update(
                {"dashboard-host": "0.0.0.0"}
            )
        ),
        "bind",
    ),
    "head service LoadBalancer": (
        _rayjob_edit(
            lambda d: _cluster_spec(d)["headGroupSpec"].update(serviceType="LoadBalancer")
        ),
        "exposure",
    ),
    "head ingress": (
        _rayjob_edit(lambda d: _cluster_spec(d)["headGroupSpec"].update(enableIngress=True)),
        "exposure",
    ),
    "NodePort Service document": (
        lambda text: (
            text
            + "---\napiVersion: v1\nkind: Service\nmetadata: {name: dash}\n"
            + "spec: {type: NodePort, ports: [{port: 8265}]}\n"
        ),
        "exposure",
    ),
    "literal RAY_AUTH_TOKEN in the job env": (
        _rayjob_edit(_runtime_env_var("RAY_AUTH_TOKEN", "3f9c2a7d1b")),
        "secret",
    ),
    "literal MLFLOW_TRACKING_PASSWORD in the job env": (
        _rayjob_edit(_runtime_env_var("MLFLOW_TRACKING_PASSWORD", "hunter2hunter2")),
        "secret",
    ),
    "literal RAY_AUTH_TOKEN in a pod env": (
        _rayjob_edit(_worker_env("RAY_AUTH_TOKEN", "3f9c2a7d1b")),
        "secret",
    ),
}


@pytest.mark.parametrize("case", RAYJOB_REGRESSIONS, ids=str)
def test_lint_catches_planted_rayjob_regression(case):
    plant, rule = RAYJOB_REGRESSIONS[case]
    problems = lint_rayjob(plant(RAYJOB_YAML.read_text()))
    assert any(p.startswith(f"{rule}:") for p in problems), problems


def test_token_from_a_secret_is_fine():
    doc = load(RAYJOB_YAML)
    container = _cluster_spec(doc)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    ref = {"secretKeyRef": {"name": "ray-token", "key": "auth_token"}}
    container["env"] = [{"name": "RAY_AUTH_TOKEN", "valueFrom": ref}]
    assert lint_rayjob(yaml.safe_dump(doc)) == []


# ---------------------------------------------------------------- k8s/rayjob.yaml structure


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_rayjob_structure():
    doc = load(RAYJOB_YAML)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:3] == ["python", "-m", "accelab"] and entry[3] in ("sweep", "train")
    assert (REPO / entry[4]).is_file(), f"{entry[4]} is a config of this repo"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["submitterPodTemplate"]["spec"]["containers"]

    cluster = spec["rayClusterSpec"]
    assert _version(cluster["rayVersion"]) >= (2, 52, 0), "KubeRay token auth needs Ray >= 2.52"
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "serviceType" not in head and not head.get("enableIngress")
    gpu_groups = [
        g
        for g in cluster["workerGroupSpecs"]
        if g["minReplicas"] == 0
        and any(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
            for c in g["template"]["spec"]["containers"]
        )
    ]
    assert gpu_groups and all(g["maxReplicas"] >= 1 and g["replicas"] == 0 for g in gpu_groups)
    for group in [head, *cluster["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_rayjob_runtime_env():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(load(RAYJOB_YAML)["spec"]["runtimeEnvYAML"])
    RuntimeEnv(**env)  # Ray's own checks (working_dir URI form, pip, env_vars types)
    assert env["working_dir"]
    env_vars = env["env_vars"]
    assert (REPO / env_vars["PYTHONPATH"] / "accelab" / "__main__.py").is_file()
    assert env_vars["ACCELAB_STORAGE_PATH"].startswith("s3://")
    assert env_vars["MLFLOW_TRACKING_URI"].startswith("http")


def test_rayjob_pip_covers_the_project_dependencies():
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load(load(RAYJOB_YAML)["spec"]["runtimeEnvYAML"])

    def name(req: str) -> str:
        return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")

    have = {name(p) for p in env["pip"]["packages"]}
    missing = {name(d) for d in deps} - have - {"ray"}  # ray comes with the image
    assert not missing, f"add to runtimeEnvYAML pip: {sorted(missing)}"


def test_no_ignore_pattern_hides_shipped_code():
    """Ray's working_dir upload honours .gitignore: a pattern such as ``export/`` once left
    ``accelab.export`` out of every submitted job ("No module named accelab.export")."""
    shipped = subprocess.run(
        ["git", "ls-files", "platform", "trainables", "configs", "benchmarks"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=REPO, input=shipped, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert shipped.strip() and ignored == []
