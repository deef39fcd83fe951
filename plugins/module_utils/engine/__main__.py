"""`python3 -m <engine package> ...`: see cli.py."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
