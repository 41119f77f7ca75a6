"""facepipe's command line plus BatchNorm-free copies of two models, for tests that launch it with torchrun.

On CPU (gloo) each rank normalises BatchNorm with its own share of the batch, so only a model without
BatchNorm can take bit-for-bit the steps of a one-process run; GroupNorm(1, C) works per face.
"""
from torch import nn

from facepipe.models import create_model, register_model


def _group_norm(m: nn.Module) -> nn.Module:
    for name, child in m.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(m, name, nn.GroupNorm(1, child.num_features))
        else:
            _group_norm(child)
    return m


def build_teacher_small_gn(num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
    return _group_norm(create_model("teacher-small", num_classes, in_channels, **kw))


def build_student_tiny_gn(num_classes: int, in_channels: int = 3, **kw) -> nn.Module:
    return _group_norm(create_model("student-tiny", num_classes, in_channels, **kw))


if __name__ == "__main__":  # registered here only, so importing this file leaves the registry alone
    from facepipe.cli import main

    register_model("teacher-small-gn")(build_teacher_small_gn)
    register_model("student-tiny-gn")(build_student_tiny_gn)
    main()
