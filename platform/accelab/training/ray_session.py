"""Start or join Ray quietly: the user sees accelab's progress lines, not Ray's log stream.

A cluster is joined when ``cluster.address`` or ``RAY_ADDRESS`` says so (as inside a
``ray job submit`` entrypoint, where Ray sets ``RAY_ADDRESS``); otherwise ``ray.init()``
starts a local Ray on this machine.
"""

from __future__ import annotations

import logging
import os
import warnings

import mlflow  # noqa: F401  (mlflow sets its logger levels on import: quiet_ray_logging's come after)
import ray

from accelab import started
from accelab.config.schema import ExperimentConfig
from accelab.errors import catch_signals_again

# Ray Train's controller polls workers this often; ``ray.train.report`` waits for the poll
# (2 s by default, ~1.8 s lost per epoch). Set before each fit: the controller reads it.
HEALTH_CHECK_INTERVAL_S = "0.1"


def cluster_address(cfg: ExperimentConfig | None = None) -> str | None:
    return (cfg.cluster.address if cfg is not None else None) or os.environ.get("RAY_ADDRESS")


def will_start_local_ray(cfg: ExperimentConfig | None = None) -> bool:
    """True when ``init_ray`` would start a new local instance (no cluster address)."""
    return not cluster_address(cfg)


def quiet_ray_logging() -> None:
    for name in ("ray", "ray.train", "ray.tune", "ray.data", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray")
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")


def init_ray(cfg: ExperimentConfig | None = None) -> None:
    """Join the configured cluster or start a local Ray. Worker logs stay in Ray's log
    directory (``<session>/logs``) instead of streaming to the terminal."""
    quiet_ray_logging()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    # Measured here: these two cost ~1.5 s per TorchTrainer start; neither serves a run
    # whose workers live on fixed nodes (the watcher reacts to cloud preemption notices).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = cluster_address(cfg)
    local = {} if address else {"include_dashboard": bool(cfg and cfg.cluster.dashboard)}
    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, **local)
    catch_signals_again()
    quiet_ray_logging()
    try:
        started.ray_logs = f"{ray._private.worker._global_node.get_session_dir_path()}/logs"
    except AttributeError:  # private API moved: fall back to the documented default
        started.ray_logs = "/tmp/ray/session_latest/logs"


def stop_ray() -> None:
    """Stop this driver's Ray work now (an interrupted or failed command): the actors it
    owns (Tune trials, Train controllers and workers) end with it, so none of them writes
    to MLflow after the driver has recorded how the run ended."""
    if ray.is_initialized():
        ray.shutdown()
