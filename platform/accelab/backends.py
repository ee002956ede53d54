"""Names of the backends a model can be measured on; every number accelab reports names one.

Torch eager on CPU or CUDA, ONNX Runtime, or a simulation (no real low-bit kernel: quality
is real, speed is not measured).
"""

from __future__ import annotations

TORCH_FP32 = "torch-fp32"  # dense torch kernels (zeroed weights are still multiplied)
TORCH_INT8 = "torch-int8-x86"  # torch's x86 int8 kernels: dynamic quantization of Linear layers
SIMULATED = "fake-quant (simulated)"  # low-bit weights simulated in fp32: no speed claimed

DESCRIPTIONS = {
    TORCH_FP32: "torch eager, fp32 dense kernels",
    TORCH_INT8: "torch eager, int8 dynamic quantization (x86/fbgemm) of Linear layers",
    SIMULATED: "fake quantization in fp32: accuracy and packed size only",
}
