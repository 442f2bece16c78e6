"""`python -m api.cli`: the command line moved to the `cli` package (cli/main.py)."""
from cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
