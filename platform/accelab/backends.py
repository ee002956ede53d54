"""Names of the backends a model can be measured on; every number accelab reports names one.

Torch eager on CPU or CUDA, ONNX Runtime, OpenVINO (CPU), or a simulation (no real low-bit
kernel: quality is real, speed is not measured).
"""

from __future__ import annotations

TORCH_FP32 = "torch-fp32"  # dense torch kernels (zeroed weights are still multiplied)
TORCH_INT8 = "torch-int8-x86"  # torch's x86 int8 kernels: dynamic quantization of Linear layers
TORCH_BF16 = "torch-bf16"  # bf16 weights and compute (AMX/avx512_bf16 CPUs, CUDA)
TORCH_INT8_STATIC = "torch-int8-x86-static"  # torch FX static int8 (Conv and Linear), calibrated
SIMULATED = "fake-quant (simulated)"  # low-bit weights simulated in fp32: no speed claimed
ORT_FP32 = "ort-fp32"  # ONNX Runtime, CPU execution provider
ORT_INT8_DYNAMIC = "ort-int8-dynamic"  # ORT dynamic quantization, per-channel int8 weights
ORT_INT8_STATIC = "ort-int8-static"  # ORT QDQ static quantization, calibrated on training data
ORT_INT4 = "ort-int4-weight-only"  # ORT MatMulNBits: block-wise int4 weights, fp32 activations
# OpenVINO: the name carries the precision the compiled model reports (export.runner.OvRunner)
OV_F32 = "openvino-f32"  # INFERENCE_PRECISION_HINT=f32
OV_BF16 = "openvino-bf16"  # the default hint, where the CPU runs it as bf16
OV_INT8 = "openvino-int8-nncf"  # NNCF post-training int8 (float parts at the default hint)
OV_INT4 = "openvino-int4-weight-only"  # NNCF int4 weight compression, float activations
OV_SETTINGS = "INFERENCE_NUM_THREADS=measure.threads, NUM_STREAMS=1, PERFORMANCE_HINT=LATENCY"

DESCRIPTIONS = {
    TORCH_FP32: "torch eager, fp32 dense kernels",
    TORCH_INT8: "torch eager, int8 dynamic quantization (x86/fbgemm) of Linear layers",
    TORCH_BF16: "torch eager, bf16 weights and activations",
    TORCH_INT8_STATIC: "torch eager, int8 static quantization (FX, x86) of Conv and Linear layers",
    "torchao-int8-weight-only": "torch on CUDA, torchao int8 weight-only Linear layers",
    "torchao-int4-weight-only": "torch on CUDA, torchao int4 weight-only (group 32, bf16 compute)",
    SIMULATED: "fake quantization in fp32: accuracy and packed size only",
    ORT_FP32: "ONNX Runtime (CPUExecutionProvider), fp32",
    ORT_INT8_DYNAMIC: "ONNX Runtime, int8 dynamic quantization, per-channel weights",
    ORT_INT8_STATIC: "ONNX Runtime, int8 static QDQ, per-channel, calibrated on training data",
    ORT_INT4: "ONNX Runtime, MatMulNBits: int4 weights (asymmetric, one scale and zero point "
    "per block of input channels, block size after -b), fp32 activations",
    OV_F32: f"OpenVINO CPU, INFERENCE_PRECISION_HINT=f32, {OV_SETTINGS}",
    OV_BF16: f"OpenVINO CPU, default precision hint (runs bf16 on this CPU), {OV_SETTINGS}",
    OV_INT8: f"OpenVINO CPU, NNCF post-training int8 (calibrated on training data), {OV_SETTINGS}",
    OV_INT8 + "+bf16": f"OpenVINO CPU, NNCF post-training int8 (calibrated on training data), "
    f"float parts bf16 (default hint), {OV_SETTINGS}",
    OV_INT4: "OpenVINO CPU, NNCF int4 weight compression (INT4_ASYM: uint4 weights, one fp16 "
    "scale and uint4 zero point per group of input channels, group size after -g; data-free), "
    f"float activations at the default hint (+bf16 where they run bf16), {OV_SETTINGS}",
}


def ort_int4(block_size: int) -> str:
    """ONNX Runtime's int4 weight-only backend at ``block_size`` (the block size changes
    both the model's size and its error, so it is part of the name)."""
    return f"{ORT_INT4}-b{block_size}"


def ov_int4(group_size: int) -> str:
    """OpenVINO's int4 weight-only backend at ``group_size`` (``compression.quant.block_size``:
    NNCF calls it the group size), named like ``ort_int4``."""
    return f"{OV_INT4}-g{group_size}"


def backend_for(
    runtime: str, bits: int, scheme: str, device: str = "cpu", block_size: int = 32
) -> str | None:
    """The real kernel a (runtime, bit-width, scheme) runs on, or None (simulated).
    OpenVINO: 32 = the f32 hint, 16 = the default hint (bf16 where the CPU has it; the
    runner names what really runs), 8 = NNCF int8 (static, whatever the scheme).
    ONNX Runtime 4 bits: MatMulNBits, weight-only, ``block_size`` weights per scale;
    OpenVINO 4 bits: NNCF int4 weight compression, ``block_size`` as its group size."""
    if runtime == "onnxruntime" and bits == 4:
        return ort_int4(block_size)
    if runtime == "openvino":
        return {32: OV_F32, 16: OV_BF16, 8: OV_INT8, 4: ov_int4(block_size)}.get(bits)
    if bits == 32:
        return TORCH_FP32 if runtime == "torch" else ORT_FP32
    if bits == 16:
        return TORCH_BF16 if runtime == "torch" else None
    if bits != 8 and not (device == "cuda" and bits == 4):
        return None
    if runtime == "onnxruntime":
        return ORT_INT8_STATIC if scheme == "static" else ORT_INT8_DYNAMIC
    if device == "cuda":
        return f"torchao-int{bits}-weight-only"
    return TORCH_INT8_STATIC if scheme == "static" else TORCH_INT8
