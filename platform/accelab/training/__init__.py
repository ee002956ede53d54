"""Training on Ray Train: launcher (driver side), per-worker loop, checkpoints, precision,
collectives, resource checks and progress lines."""
