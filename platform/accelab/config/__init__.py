"""Experiment configuration: schema (``schema``), loading (``loader``), cross-checks (``checks``)."""

from accelab.config.loader import apply_overrides, load_config, read_yaml, validate_dict
from accelab.config.schema import ExperimentConfig

__all__ = ["ExperimentConfig", "apply_overrides", "load_config", "read_yaml", "validate_dict"]
