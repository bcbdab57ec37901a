"""Samplers of the target: psutil over its process tree (and memray for Python targets)."""
