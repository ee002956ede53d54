"""YAML + ``key.sub=value`` overrides -> validated ``ExperimentConfig``.

All problems are collected and raised together as one ``ConfigError`` whose lines name
where each came from: the file (with its line where YAML gives one) or the override, and
the dotted key. Schema errors do not hide cross-field errors: the keys that failed are set
aside and the rest is checked too. Nothing here starts Ray or touches MLflow.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from accelab.config.schema import ExperimentConfig
from accelab.errors import ConfigError

FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
MAX_BYTES = 1_000_000  # an experiment file is small; a bigger one is the wrong file


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the
    last one silently: a second ``train:`` block would replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: {len(raw):,} bytes is not an experiment file (limit 1 MB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely (no Python objects, no duplicate keys); errors name the
    file and line."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML error: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: empty config file (nothing but comments or whitespace)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.epochs=3'`` -> (['train', 'epochs'], 3). Values are parsed as YAML scalars."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" as a string
    return [p.strip() for p in parts], value


DIST_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


def config_path(parts: list[str]) -> list[str]:
    """An override's key path in the config tree. Under ``sweep.space`` a dotted config key
    is one name (``sweep.space.compression.quant.bits={grid: [32, 8]}`` sets the entry
    ``compression.quant.bits``), optionally followed by its distribution kind
    (``sweep.space.compression.quant.bits.grid=[32, 8]``)."""
    if parts[:2] != ["sweep", "space"] or len(parts) < 4:
        return parts
    if parts[-1] in DIST_KINDS and len(parts) > 4:
        return [*parts[:2], ".".join(parts[2:-1]), parts[-1]]
    return [*parts[:2], ".".join(parts[2:])]


def set_dotted(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[a][b]...=value``, creating sections as needed."""
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section"
            )
        node = child
    node[parts[-1]] = value


def apply_overrides(
    data: dict[str, Any], overrides: list[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """(overridden copy, {dotted key: the override text that set it})."""
    out = copy.deepcopy(data)
    origin: dict[str, str] = {}
    problems = []
    for text in overrides:
        try:
            parts, value = parse_override(text)
            parts = config_path(parts)
            set_dotted(out, parts, value)
            origin[".".join(parts)] = text
        except ConfigError as exc:
            problems += exc.messages
    if problems:
        raise ConfigError(problems)
    return out, origin


class Sources:
    """Where a dotted key's value came from: an override, else the file."""

    def __init__(self, file: str, origin: dict[str, str] | None = None):
        self.file, self.origin = file, origin or {}

    def of(self, key: str) -> str:
        for set_key, text in self.origin.items():
            inside = key.startswith((set_key + ".", set_key + "["))
            if key == set_key or inside or set_key.startswith(key + "."):
                return f"override {text if len(text) <= 60 else text[:57] + '...'!r}"
        return self.file


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(dotted key, message) per pydantic error, in words a user recognises."""
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{msg} (got {err['input']!r})"
        out.append((key, msg))
    return out


def format_validation_error(exc: ValidationError, source: str | Sources) -> list[str]:
    sources = source if isinstance(source, Sources) else Sources(source)
    return [f"{sources.of(key)}: {key}: {msg}" for key, msg in validation_problems(exc)]


def _drop(data: dict[str, Any], key: str) -> bool:
    """Remove the value at dotted ``key`` (so defaults apply); False if not found."""
    parts, node = key.split("."), data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return False
    if isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return True
    return False


def _repaired(data: dict[str, Any], exc: ValidationError) -> ExperimentConfig | None:
    """The config with its invalid keys set aside (defaults instead), or None: lets the
    cross-field checks of everything else run in the same pass."""
    trial = copy.deepcopy(data)
    for _ in range(5):
        dropped = [_drop(trial, key) for key, _ in validation_problems(exc)]
        if not any(dropped):
            return None
        try:
            return ExperimentConfig.model_validate(trial)
        except ValidationError as again:
            exc = again
    return None


Checks = Callable[[ExperimentConfig], list[str]]


def validate_dict(
    data: dict[str, Any], source: str | Sources, checks: Checks | None = None
) -> ExperimentConfig:
    """Validate a raw mapping (already overridden), then run ``checks`` (cross-field checks
    that need the trainable or the engine: ``accelab.preflight`` passes them); every
    problem is reported at once, each naming its file or override and dotted key."""
    sources = source if isinstance(source, Sources) else Sources(source)
    try:
        cfg = ExperimentConfig.model_validate(data)
        problems: list[str] = []
    except ValidationError as exc:
        problems = format_validation_error(exc, sources)
        cfg = _repaired(data, exc)
        if cfg is None or checks is None:
            raise ConfigError(problems) from None
        failed = {key for key, _ in validation_problems(exc)}
        extra = [p for p in checks(cfg) if p.split(":", 1)[0] not in failed]
        raise ConfigError(
            problems + [f"{sources.of(p.split(':', 1)[0])}: {p}" for p in extra]
        ) from None
    if checks is not None:
        problems = [f"{sources.of(p.split(':', 1)[0])}: {p}" for p in checks(cfg)]
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), checks: Checks | None = None
) -> ExperimentConfig:
    """Load, override and validate one experiment file (schema only, unless ``checks`` are
    given: ``accelab.preflight.load_config`` adds the cross-field ones). Raises ``ConfigError``."""
    data, origin = apply_overrides(read_yaml(path), list(overrides))
    sources = Sources(str(path), origin)
    cfg = validate_dict(data, sources, checks)
    cfg._sources = sources
    return cfg
