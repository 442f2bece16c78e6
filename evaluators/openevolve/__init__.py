"""OpenEvolve problems, unmodified: `initial_program.py` + `evaluator.py` (+ `config.yaml`).

See docs/openevolve.md. `map_problem` maps a problem package (package.py) to plain campaign
data, `load_problem` reads one from paths first (the CLI); the registered `openevolve` task runs
the evaluator inside the sandbox (driver.py).
"""
from evoforge.evaluators.base import register
from evoforge.evaluators.openevolve.config import Problem, load_problem, map_problem
from evoforge.evaluators.openevolve.task import TASK, OpenEvolveParams, OpenEvolveTask, fitness

register(TASK)

__all__ = ["Problem", "load_problem", "map_problem", "OpenEvolveParams", "OpenEvolveTask", "TASK", "fitness"]
