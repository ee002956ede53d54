"""Deployment formats and runtimes: ONNX export and ONNX Runtime sessions (fp32, int8
dynamic, int8 static QDQ), checked against the torch model they came from."""
