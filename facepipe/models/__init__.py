"""Segmentation networks. Importing this package registers every architecture."""
# Imported for their @register_model side effect.
from facepipe.models import bisenet, student, teacher  # noqa: E402,F401
from facepipe.models.registry import create_model, default_in_channels, list_models, register_model

__all__ = ["create_model", "default_in_channels", "list_models", "register_model"]
