"""The `optimizer` task: evolve init/update of a first-order optimizer, scored against tuned Adam.

See docs/tasks/optimizer.md.
"""
from evoforge.evaluators.base import register
from evoforge.evaluators.optimizer.task import OptimizerParams, OptimizerTask

TASK = register(OptimizerTask())

__all__ = ["TASK", "OptimizerParams", "OptimizerTask"]
