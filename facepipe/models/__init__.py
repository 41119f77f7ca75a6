"""Segmentation networks. Importing this package registers every architecture."""
from facepipe.models.registry import create_model, list_models, register_model

# Imported for their @register_model side effect.
from facepipe.models import bisenet, student, teacher  # noqa: E402,F401

__all__ = ["create_model", "list_models", "register_model"]
