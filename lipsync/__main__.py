"""`python -m lipsync`: the command line (lipsync.cli)."""

from .cli import console_main

if __name__ == "__main__":
    console_main()
