"""The `alpha_factors` task: evolve alpha(panel), a daily cross-sectional stock-selection signal.

See docs/tasks/alpha_factors.md.
"""
from evoforge.evaluators.alpha_factors.task import AlphaFactorsTask, AlphaParams
from evoforge.evaluators.base import register

TASK = register(AlphaFactorsTask())

__all__ = ["TASK", "AlphaFactorsTask", "AlphaParams"]
