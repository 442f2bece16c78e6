"""Package layout only (everything else is in pyproject.toml).

The repository keeps its fixed top-level folders (api/, worker/, ...); the distribution installs
them under one name, `evoforge.<folder>`, so nothing but `evoforge` lands in site-packages
(tests/test_wheel.py builds the wheel and checks it).
"""
from setuptools import find_namespace_packages, setup

PARTS = ("api", "cli", "worker", "evolution", "evaluators", "sandbox", "db", "migrations")

package_dir = {"evoforge": "evoforge"}
packages = ["evoforge"]
for part in PARTS:
    package_dir[f"evoforge.{part}"] = part
    packages.append(f"evoforge.{part}")
    packages += [f"evoforge.{part}.{sub}"
                 for sub in find_namespace_packages(part, exclude=["*__pycache__*"])]

setup(package_dir=package_dir, packages=packages)
