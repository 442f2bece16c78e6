"""The `evoforge` command line (`cli.main:main`): one module per group of commands."""
