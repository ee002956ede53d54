"""The resource pre-check: what the cluster has now, and what its autoscaler may add."""

from __future__ import annotations

import pytest
import yaml

from accelab.errors import ResourceError
from accelab.preflight import load_config
from accelab.training.resources import (
    autoscalable_nodes,
    check_placement,
    check_room_for_reads,
    placeable,
)
from tests.conftest import CONFIGS


def test_placement_strategies():
    b = {"CPU": 1.0}
    nodes = [{"CPU": 1.0}, {"CPU": 2.0}]
    assert placeable(b, nodes, 3, "PACK") and not placeable(b, nodes, 4, "SPREAD")
    assert placeable(b, nodes, 2, "STRICT_PACK") and not placeable(b, nodes, 3, "STRICT_PACK")
    assert placeable(b, nodes, 2, "STRICT_SPREAD") and not placeable(b, nodes, 3, "STRICT_SPREAD")


def test_an_autoscalable_node_type_makes_a_big_request_placeable(tmp_path):
    types = tmp_path / "bootstrap.yaml"
    types.write_text(yaml.safe_dump({
        "max_workers": 3, "head_node_type": "head",
        "available_node_types": {"head": {"resources": {"CPU": 0}, "max_workers": 0},
                                 "gpu": {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 2}},
    }))  # fmt: skip
    live = [{"CPU": 0.0}, {"CPU": 2.0}]
    cfg = load_config(CONFIGS / "digits.yaml", [f"cluster.node_types_file={types}",
                                                "scaling.num_workers=2", "scaling.use_gpu=true"])  # fmt: skip
    potential = autoscalable_nodes(cfg)
    assert potential == [{"CPU": 4.0, "GPU": 1.0}] * 2
    note = check_placement(cfg, live, "the Ray cluster", potential=potential)
    assert "autoscaler" in note  # allowed: the GPU nodes come when asked for
    too_big = load_config(CONFIGS / "digits.yaml", [f"cluster.node_types_file={types}",
                                                    "scaling.num_workers=3", "scaling.use_gpu=true"])  # fmt: skip
    with pytest.raises(
        ResourceError, match="can never fit the Ray cluster .* or any of its 2 autoscalable"
    ):
        check_placement(too_big, live, "the Ray cluster", potential=autoscalable_nodes(too_big))


@pytest.mark.parametrize(
    "overrides, bundle",
    [
        ({}, {"CPU": 2}),
        ({"measure": {"device": "cuda"}}, {"CPU": 2, "GPU": 1}),  # one measurement per GPU
        ({"finetune": {"epochs": 1}}, {"memory": 1}),  # its trainer's workers hold them
    ],
)
def test_what_a_sweep_trial_reserves(overrides, bundle):
    from accelab.sweep.tune import trial_resources

    base = load_config(CONFIGS / "digits_sweep.yaml").model_dump(mode="json")
    factory = trial_resources(base, threads=2)(overrides)
    assert factory.bundles == [bundle]


def test_a_ray_data_task_needs_a_cpu_its_workers_leave_for_the_reads():
    """Ray Data's read tasks need a CPU the training workers do not hold: refused up front
    (naming scaling.cpus_per_worker) instead of a training that waits forever."""
    machine = [{"CPU": 2.0}]
    whole = load_config(CONFIGS / "digits_parquet.yaml", ["scaling.cpus_per_worker=1"])
    with pytest.raises(ResourceError, match=r"scaling.cpus_per_worker: 2 workers x 1 CPUs "
                       r"leave 0 of the 2 CPUs of this machine .* \(e.g. 0.5\)"):  # fmt: skip
        check_room_for_reads(whole, machine, "this machine")
    check_room_for_reads(load_config(CONFIGS / "digits_parquet.yaml"), machine, "this machine")
    torch_splits = load_config(CONFIGS / "digits.yaml", ["scaling.cpus_per_worker=1"])
    check_room_for_reads(torch_splits, machine, "this machine")  # nothing else to run
