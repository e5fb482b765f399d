"""Stage 1: distil an EPD table from a high-NFE teacher (docs/training.md)."""

from __future__ import annotations

from .loop import DistillConfig, DistillStats, distill
from .pool import TeacherPool, make_pool
from .teacher import TEACHERS, teacher_trajectory
from .trainable import TrainableTable

__all__ = [
    "TEACHERS",
    "DistillConfig",
    "DistillStats",
    "TeacherPool",
    "TrainableTable",
    "distill",
    "make_pool",
    "teacher_trajectory",
]
