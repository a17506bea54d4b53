"""Training: the loop (loop.py), one step (step.py), the losses, augmentation, the EMA generator, and
what a run is wired from (wiring.py), on one device or under torchrun."""
