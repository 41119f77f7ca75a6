"""Inference: checkpoints and loaded models, prediction, parse, eval, bench and export."""
