"""Fail fast when the requested workers can never be placed (Ray would wait forever).

The nodes considered are those alive now plus, on an autoscaling cluster, every node the
autoscaler may add: the node types of its config (``cluster.node_types_file``, by default
the ``~/ray_bootstrap_config.yaml`` that ``ray up`` leaves on the head), up to each type's
``max_workers`` and the cluster's global ``max_workers``.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray
import torch
import yaml

from accelab.config.schema import ExperimentConfig
from accelab.errors import ResourceError, UsageError
from accelab.tasks import resolve_task
from accelab.training.ray_session import will_start_local_ray

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def bundle(cfg: ExperimentConfig) -> dict[str, float]:
    """Resources one training worker asks for."""
    s = cfg.scaling
    out = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        out["GPU"] = s.gpus_per_worker
    return out


def fits(bundle_: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in bundle_.items())


def placeable(b: dict[str, float], nodes: list[dict[str, float]], n: int, strategy: str) -> bool:
    """Whether ``n`` bundles ``b`` fit ``nodes`` (greedy per strategy: PACK/SPREAD fill any
    node; STRICT_PACK needs one node for all; STRICT_SPREAD one node each)."""
    if strategy == "STRICT_PACK":
        return any(all(node.get(k, 0.0) >= v * n for k, v in b.items()) for node in nodes)
    if strategy == "STRICT_SPREAD":
        return sum(fits(b, node) for node in nodes) >= n
    per_node = (min(int(node.get(k, 0.0) // v) for k, v in b.items() if v > 0) for node in nodes)
    return sum(per_node) >= n


def check_placement(
    cfg: ExperimentConfig,
    nodes: list[dict[str, float]],
    where: str,
    workers: int | None = None,
    potential: list[dict[str, float]] | None = None,
) -> str | None:
    """Raise ``ResourceError`` naming ``scaling.*`` if ``workers`` bundles can never fit
    ``nodes`` plus the ``potential`` nodes an autoscaler may add. Returns a note when the
    request needs the autoscaler (it fits only with added nodes), else None."""
    if cfg.scaling.autoscaling:
        return None
    n = workers or cfg.scaling.num_workers
    b = bundle(cfg)
    strategy = cfg.scaling.placement_strategy
    if placeable(b, nodes, n, strategy):
        return None
    if potential and placeable(b, nodes + potential, n, strategy):
        return f"{n} workers x {b} fit only once the autoscaler adds nodes: waiting for it"
    need = ", ".join(f"{k}={v:g}" for k, v in b.items())
    total = {k: sum(node.get(k, 0.0) for node in nodes) for k in b}
    have = ", ".join(f"{k}={v:g}" for k, v in total.items())
    grow = f" or any of its {len(potential)} autoscalable node(s)" if potential else ""
    raise ResourceError(
        f"{cfg.labelled('scaling.num_workers')}: {n} workers x {{{need}}} ({strategy}) can never "
        f"fit {where} ({len(nodes)} node(s), total {have}){grow}; lower scaling.num_workers or "
        "scaling.cpus_per_worker, or set scaling.autoscaling=true if the cluster can grow "
        "in ways accelab cannot see"
    )


def check_before_ray(cfg: ExperimentConfig, workers: int | None = None) -> None:
    """Before ``ray.init`` starts a local Ray: the request must fit this machine."""
    if will_start_local_ray(cfg):
        nodes = local_nodes()
        check_placement(cfg, nodes, "this machine", workers)
        check_room_for_reads(cfg, nodes, "this machine", workers)


READ_CPUS = 1.0  # what one Ray Data read task asks for (its default)


def check_room_for_reads(
    cfg: ExperimentConfig, nodes: list[dict[str, float]], where: str, workers: int | None = None
) -> None:
    """A Ray Data task's reads run as Ray tasks next to the training workers: when the
    workers hold every CPU, the reads (and so the training) wait forever."""
    if not resolve_task(cfg.trainable.name).ray_data:
        return
    n = workers or cfg.scaling.num_workers
    total = sum(node.get("CPU", 0.0) for node in nodes)
    left = total - n * cfg.scaling.cpus_per_worker
    if left < READ_CPUS:
        raise ResourceError(
            f"{cfg.labelled('scaling.cpus_per_worker')}: {n} workers x "
            f"{cfg.scaling.cpus_per_worker:g} CPUs leave {max(left, 0):g} of the {total:g} CPUs "
            f"of {where} for Ray Data's reads of {cfg.trainable.name!r}'s splits (they need "
            f"{READ_CPUS:g}) and would wait forever; lower scaling.cpus_per_worker (e.g. "
            f"{max((total - READ_CPUS) / n, 0.1):g}) or scaling.num_workers"
        )


def local_nodes() -> list[dict[str, float]]:
    """This machine, as a local Ray started by ``ray.init()`` would see it."""
    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]


def cluster_nodes() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def autoscalable_nodes(cfg: ExperimentConfig) -> list[dict[str, float]]:
    """Nodes the autoscaler may still add, from its node types (empty when unknown)."""
    path = cfg.cluster.node_types_file or BOOTSTRAP_CONFIG
    file = Path(path).expanduser()
    if not file.is_file():
        if cfg.cluster.node_types_file:
            raise UsageError(f"{cfg.labelled('cluster.node_types_file')}: no such file {file}")
        return []
    try:
        data = yaml.safe_load(file.read_text()) or {}
        types = data.get("available_node_types") or {}
        head = data.get("head_node_type")
        budget = int(data.get("max_workers", 10**6))
    except (yaml.YAMLError, AttributeError, ValueError, TypeError) as exc:
        raise UsageError(f"{file}: not a Ray cluster config ({exc})") from None
    out: list[dict[str, float]] = []
    for name, spec in types.items():
        if name == head or not isinstance(spec, dict):
            continue
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        out += [resources] * max(0, int(spec.get("max_workers", 0)))
    return out[:budget]


def check_cluster(cfg: ExperimentConfig, echo=print, workers: int | None = None) -> None:
    """After joining Ray: the request fits the live nodes (or the autoscaler can add what
    is missing)."""
    note = check_placement(
        cfg, cluster_nodes(), "the Ray cluster", workers, potential=autoscalable_nodes(cfg)
    )
    if note:
        echo(note)
