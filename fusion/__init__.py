"""Fusion: joins face and eye scores per track, decides live/spoof, keeps accuracy metrics."""
