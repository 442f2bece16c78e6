"""EvoForge: LLM-driven program evolution.

The installed distribution has one top-level name, `evoforge`; its parts are `evoforge.api`,
`evoforge.cli`, `evoforge.worker`, `evoforge.evolution`, `evoforge.evaluators`,
`evoforge.sandbox`, `evoforge.db` and `evoforge.migrations`. In the repository those parts are the
top-level folders (a fixed layout) and setup.py installs them under this package; run from a
checkout, this package finds them beside itself. See docs/architecture.md.
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

_PARTS = ("api", "cli", "worker", "evolution", "evaluators", "sandbox", "db", "migrations")
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (_os.path.isfile(_os.path.join(_checkout, "setup.py"))
        and all(_os.path.isdir(_os.path.join(_checkout, p)) for p in _PARTS)
        and _checkout not in __path__):
    # A checkout: evoforge.api is ./api, ... (an installed wheel has them inside this folder).
    __path__.append(_checkout)
