"""The `evoforge` command line (`evoforge.cli.main:main`): one module per group of commands."""
