"""Training: the loss family, the step, the Trainer subclass, the reference cache, and
`basealign train` (run.py), which wires them together."""
