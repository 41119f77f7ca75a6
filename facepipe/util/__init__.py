"""Utilities below everything: errors, atomic writes, the output protocol, progress, images, geometry, label schemas, metrics."""
