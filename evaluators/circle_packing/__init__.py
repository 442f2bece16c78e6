"""The circle_packing task: n circles in the unit square, maximise the sum of radii."""
from evoforge.evaluators.base import register
from evoforge.evaluators.circle_packing.task import (BEST_KNOWN, CirclePackingParams,
                                                     CirclePackingTask, TASK)

register(TASK)

__all__ = ["BEST_KNOWN", "CirclePackingParams", "CirclePackingTask", "TASK"]
