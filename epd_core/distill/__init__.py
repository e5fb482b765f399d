"""Stage 1: distil an EPD table from a high-NFE teacher (epd-method.md §3)."""

from __future__ import annotations

from .loop import DistillConfig, DistillStats, distill
from .teacher import TEACHERS, teacher_trajectory
from .trainable import TrainableTable

__all__ = ["TEACHERS", "DistillConfig", "DistillStats", "TrainableTable", "distill", "teacher_trajectory"]
