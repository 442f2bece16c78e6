"""OpenEvolve problems, unmodified: `initial_program.py` + `evaluator.py` (+ `config.yaml`).

See docs/openevolve.md. `load_problem` maps the files and config to plain campaign data; the
registered `openevolve` task runs the evaluator inside the sandbox (driver.py).
"""
from evoforge.evaluators.base import register
from evoforge.evaluators.openevolve.config import Problem, load_problem
from evoforge.evaluators.openevolve.task import TASK, OpenEvolveParams, OpenEvolveTask, fitness

register(TASK)

__all__ = ["Problem", "load_problem", "OpenEvolveParams", "OpenEvolveTask", "TASK", "fitness"]
