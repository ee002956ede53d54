"""Facts about the machine this process runs on, named the same way everywhere they are
recorded (MLflow tags, the precision cache key): the CPU model and the device's name."""

from __future__ import annotations

from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # stdlib: the repo's platform/ folder has no __init__.py on purpose

    return platform.processor() or platform.machine()


def device_name(device=None) -> str:
    """The GPU's name for a CUDA ``device`` (a ``torch.device``), else the CPU model; with
    no device: the first GPU when torch sees one, else ``"cpu"`` (an environment tag)."""
    import torch

    if device is None:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
