"""Start or join Ray quietly: the user sees accelab's progress lines, not Ray's log stream."""

from __future__ import annotations

import logging
import os
import warnings


def will_start_local_ray() -> bool:
    """True when ``ray.init()`` would start a new local instance (no cluster address)."""
    return not os.environ.get("RAY_ADDRESS")


def quiet_ray_logging() -> None:
    import mlflow  # noqa: F401  (mlflow sets its logger levels on import; override after)

    for name in ("ray", "ray.train", "ray.tune", "ray.data", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray")
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")


def init_ray(runtime_env: dict | None = None) -> None:
    """Join ``RAY_ADDRESS`` if set, else start a local Ray. Worker logs stay in Ray's log
    directory (``/tmp/ray/session_latest/logs``) instead of streaming to the terminal."""
    import ray

    quiet_ray_logging()
    if ray.is_initialized():
        return
    ray.init(
        address=os.environ.get("RAY_ADDRESS"),
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env=runtime_env,
    )
    quiet_ray_logging()
    from accelab import started

    try:
        started.ray_logs = f"{ray._private.worker._global_node.get_session_dir_path()}/logs"
    except AttributeError:  # private API moved: fall back to the documented default
        started.ray_logs = "/tmp/ray/session_latest/logs"
