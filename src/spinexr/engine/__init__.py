"""Training: the per-epoch loop, its state and early stopping, devices and DDP."""
