"""The matmul task: exact low-rank decompositions of the matrix multiplication tensor."""
from evaluators.base import register
from evaluators.matmul.ranks import best_known_rank
from evaluators.matmul.task import MatmulParams, MatmulTask, TASK

register(TASK)

__all__ = ["MatmulParams", "MatmulTask", "TASK", "best_known_rank"]
