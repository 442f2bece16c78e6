"""The circle_packing task: n circles in the unit square, maximise the sum of radii."""
from evaluators.base import register
from evaluators.circle_packing.task import BEST_KNOWN, CirclePackingParams, CirclePackingTask, TASK

register(TASK)

__all__ = ["BEST_KNOWN", "CirclePackingParams", "CirclePackingTask", "TASK"]
