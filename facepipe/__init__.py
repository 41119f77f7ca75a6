"""facepipe: face parsing after Wei et al., "Accurate Facial Image Parsing at Real-Time Speed" (TIP 2019)."""

__version__ = "0.1.0"
