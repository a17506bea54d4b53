"""A run directory: its lock and status, the checkpoint format, and what a run writes for people
(TensorBoard, grids, logs, curves)."""
