"""EvoForge: LLM-driven program evolution.

The installed distribution has one top-level name, `evoforge`; its parts are `evoforge.api`,
`evoforge.cli`, `evoforge.worker`, `evoforge.evolution`, `evoforge.evaluators`,
`evoforge.sandbox`, `evoforge.db` and `evoforge.migrations`. In the repository those parts are the
top-level folders (a fixed layout) and setup.py installs them under this package; run from a
checkout, this package finds them beside itself. See docs/architecture.md.

The Python API lives here too: `evoforge.evolve`, `evoforge.evaluate` (python_api.py) and
`evoforge.Client` (client.py); see docs/python.md.
"""
from __future__ import annotations

import os as _os

TYPE_CHECKING = False  # not `typing` (milliseconds to import); type checkers read it as True
if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load on first use
    from evoforge.client import Client
    from evoforge.python_api import Evaluation, Result, evaluate, evolve

__version__ = "0.1.0"

_PARTS = ("api", "cli", "worker", "evolution", "evaluators", "sandbox", "db", "migrations")
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (_os.path.isfile(_os.path.join(_checkout, "setup.py"))
        and all(_os.path.isdir(_os.path.join(_checkout, p)) for p in _PARTS)
        and _checkout not in __path__):
    # A checkout: evoforge.api is ./api, ... (an installed wheel has them inside this folder).
    __path__.append(_checkout)

# The Python API (docs/python.md), loaded on first use so that `import evoforge` stays cheap.
_LAZY = {"evolve": "evoforge.python_api", "evaluate": "evoforge.python_api",
         "Result": "evoforge.python_api", "Evaluation": "evoforge.python_api",
         "Client": "evoforge.client"}
__all__ = ["evolve", "evaluate", "Result", "Evaluation", "Client", "__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evoforge' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
