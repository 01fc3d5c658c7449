"""Training, evaluation and export of the liveness models; artifacts live in ``models/artifacts``."""
