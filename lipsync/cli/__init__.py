"""The command line: `python -m lipsync` (or the `lipsync` command) and its subcommands.

    python -m lipsync --face F --audio A --outfile O.mp4    sync one clip (sync.py; the official inference.py flags)
    python -m lipsync batch MANIFEST                        many clips, one model per worker (batch.py)
    python -m lipsync score VIDEO [--audio A] [--json]      SyncNet's sync score of any clip (score.py)

flags.py holds what they share: flags made from the setting declarations, and how a command ends (one sentence and
an exit status, never a traceback).
"""

from __future__ import annotations

import sys

COMMANDS = ("batch", "score")  # subcommands; anything else is the sync command's flags


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names (default: this process's arguments); the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["batch"]:  # `python -m lipsync batch MANIFEST`: many clips, one model per worker
        from .batch import main as batch_main

        return batch_main(argv[1:])
    if argv[:1] == ["score"]:  # `python -m lipsync score VIDEO`: SyncNet's verdict on any clip
        from .score import main as score_main

        return score_main(argv[1:])
    from .sync import main as sync_main

    return sync_main(argv)


def console_main() -> None:
    """Entry point of the `lipsync` console script and of `python -m lipsync`."""
    sys.exit(main())
