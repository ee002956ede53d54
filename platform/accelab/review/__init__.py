"""Review and shipping in MLflow: every model an MLflow Model (ONNX, no pickled code), the
recommendation in the Model Registry, and what a person sees in the MLflow UI."""
