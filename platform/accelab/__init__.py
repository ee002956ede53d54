"""accelab: make neural networks faster, measurably.

Ray Train runs DDP + mixed-precision training, Ray Tune sweeps the acceleration knobs,
MLflow records accuracy next to measured latency and size.
"""

__version__ = "0.1.0"
