"""The matmul task: exact low-rank decompositions of the matrix multiplication tensor."""
from evoforge.evaluators.base import register
from evoforge.evaluators.matmul.ranks import best_known_rank
from evoforge.evaluators.matmul.task import MatmulParams, MatmulTask, TASK

register(TASK)

__all__ = ["MatmulParams", "MatmulTask", "TASK", "best_known_rank"]
