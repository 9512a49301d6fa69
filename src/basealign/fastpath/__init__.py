"""The engine of the training step: packed layouts, attention backends, fused log-probs.

Knows nothing of the Trainer, the Hub or files: records in, per-token log-probs out.
"""
