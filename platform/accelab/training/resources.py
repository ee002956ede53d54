"""Fail fast when the requested workers can never be placed (Ray would wait forever)."""

from __future__ import annotations

import os

from accelab.config.schema import ExperimentConfig
from accelab.errors import ResourceError


def bundle(cfg: ExperimentConfig) -> dict[str, float]:
    """Resources one training worker asks for."""
    s = cfg.scaling
    out = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        out["GPU"] = s.gpus_per_worker
    return out


def fits(bundle_: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in bundle_.items())


def check_placement(
    cfg: ExperimentConfig, nodes: list[dict[str, float]], where: str, workers: int | None = None
) -> None:
    """Raise ``ResourceError`` naming ``scaling.*`` if ``workers`` bundles can never fit ``nodes``.

    Placement is simulated greedily per strategy (PACK/SPREAD fill any node; STRICT_PACK
    needs one node for all; STRICT_SPREAD one node each)."""
    if cfg.scaling.autoscaling:
        return
    n = workers or cfg.scaling.num_workers
    b = bundle(cfg)
    need = ", ".join(f"{k}={v:g}" for k, v in b.items())
    total = {k: sum(node.get(k, 0.0) for node in nodes) for k in b}
    have = ", ".join(f"{k}={v:g}" for k, v in total.items())
    strategy = cfg.scaling.placement_strategy
    if strategy == "STRICT_PACK":
        ok = any(all(node.get(k, 0.0) >= v * n for k, v in b.items()) for node in nodes)
    elif strategy == "STRICT_SPREAD":
        ok = sum(fits(b, node) for node in nodes) >= n
    else:
        ok = (
            sum(min(int(node.get(k, 0.0) // v) for k, v in b.items() if v > 0) for node in nodes)
            >= n
        )
    if not ok:
        raise ResourceError(
            f"{cfg.labelled('scaling.num_workers')}: {n} workers x {{{need}}} ({strategy}) can never fit {where} "
            f"({len(nodes)} node(s), total {have}); lower scaling.num_workers or "
            f"scaling.cpus_per_worker, or set scaling.autoscaling=true on an autoscaling cluster"
        )


def check_before_ray(cfg: ExperimentConfig, workers: int | None = None) -> None:
    """Before ``ray.init`` starts a local Ray: the request must fit this machine."""
    from accelab.ray_session import will_start_local_ray

    if will_start_local_ray():
        check_placement(cfg, local_nodes(), "this machine", workers)


def local_nodes() -> list[dict[str, float]]:
    """This machine, as a local Ray started by ``ray.init()`` would see it."""
    import torch

    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]


def cluster_nodes() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]
