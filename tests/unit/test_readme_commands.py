"""The README's two set-up commands are what a new user runs first: the main job must name
a shipped config that accelab itself accepts (schema and every cross-field check), and the
test command must be the one `.ci/run` runs. Both fail when code and docs drift apart
(a renamed key, a removed config, a console script that no longer exists)."""

from __future__ import annotations

import re
import shlex

import tomllib

from accelab.preflight import load_config
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
MARKER = "<!-- test-command -->"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def main_job() -> list[str]:
    """The accelab invocation of the first set-up command, as argv."""
    (first, *_) = bash_blocks(README.split(MARKER)[0])
    steps = [shlex.split(s) for s in first.split("&&")]
    return next(s for s in steps if s[0] == "accelab")


def test_the_main_job_runs_a_shipped_config_accelab_accepts():
    argv = main_job()
    script = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in script, "the README's command is an installed console script"
    assert argv[1] == "sweep", "the main job is a sweep (train, compress, measure, register)"
    cfg = load_config(REPO / argv[2])  # every check a real run does before Ray starts
    assert cfg.registry.enabled and (cfg.sweep.space or cfg.sweep.variants), (
        "it ends in a registered recommendation"
    )


def test_ci_runs_the_readme_test_command():
    (command, *_) = bash_blocks(README.split(MARKER)[1])
    ci = (REPO / ".ci" / "run").read_text()
    assert MARKER in ci, ".ci/run reads the command after the README's marker"
    assert "torch==2.13.0" in command.split("&&")[0], "torch's CPU build is installed first"
    assert "pytest" in command and command.rstrip().endswith("tests")
