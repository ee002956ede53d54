"""A command's setup, made once: the config, its resolved task and (when first asked for)
the data splits, passed down to ``variant/`` and ``sweep/`` as one typed object instead
of each layer resolving the trainable, loading the splits or building the model again
(as torchtune's recipes do in their ``setup``).

``Setup.of(cfg)`` is called once per command in its driver (``commands/compress.py``,
``commands/sweep.py``). Processes that Ray starts get no ``Setup`` (it is not shipped:
the splits may be large) and resolve again in their own process, which is legitimate:

- each Tune trial (``sweep.trial.sweep_trial``: a Setup of its sampled config, once per trial);
- each Ray Train worker (``training.loop``: the task, model and splits on that rank; the
  variant and the distillation teacher rebuilt there by ``compress.pipeline.CompressionHooks``);
- the dense training run (``training.launcher.run_training``, a worker-side loop too).

Outside a config's run, ``compress.deploy.builder`` resolves the task a saved recipe names
(``accelab export``, the registry) and ``preflight`` resolves it to check the config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import nn

from accelab.compress.pipeline import Calibration
from accelab.config.schema import ExperimentConfig
from accelab.tasks import model_of, resolve_task
from trainables.base import Splits, Task


@dataclass
class Setup:
    """The config and its task; ``splits`` loaded on first use and kept."""

    cfg: ExperimentConfig
    task: Task

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> Setup:
        return cls(cfg, resolve_task(cfg.trainable.name))

    @functools.cached_property
    def splits(self) -> Splits:
        return self.task.load_splits(self.cfg.trainable.data_seed)

    def new_model(self) -> nn.Module:
        """A fresh (randomly initialised) model of the configured architecture."""
        return model_of(self.task, self.cfg.trainable)

    @property
    def calibration(self) -> Calibration:
        """The training split's first batches (``train.batch_size``), loaded when a
        quantizer first asks for them."""
        return Calibration(lambda: self.splits.train, self.cfg.train.batch_size)

    def with_config(self, cfg: ExperimentConfig) -> Setup:
        """The same task and splits for a config that differs in other sections (the A/A
        control's uncompressed copy, absolute storage paths); another trainable resolves anew."""
        if cfg.trainable != self.cfg.trainable:
            return Setup.of(cfg)
        other = Setup(cfg, self.task)
        if "splits" in self.__dict__:
            other.splits = self.splits
        return other
