"""What the commands (`python -m lipsync`, `batch` and `score`) share: flags made from the setting declarations
(lipsync.options) and split back into them, booleans as text, warnings on stderr, and how a command ends: Ctrl-C
and SIGTERM stopping the work at its next step, and every error as one sentence and an exit status.

Exit statuses: 0 done; 1 a job failed (`LipSyncError`); 2 the command line or a manifest cannot be run (argparse
and `ManifestError`); 3 a bug (an unexpected exception; LIPSYNC_DEBUG=1 shows its traceback); 130 Ctrl-C; 143
SIGTERM (`kill`, `timeout`, `docker stop`, a cluster taking the machine back). Stopped either way, a command
leaves no partial file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any, Callable

from ..batch.manifest import ManifestError
from ..environment import DEBUG, parse_bool
from ..errors import LipSyncError
from ..options import EngineOptions, Options, declared
from ..runtime.interrupts import InterruptFlag

EXIT_FAILED, EXIT_USAGE, EXIT_BUG = 1, 2, 3


def _bool_flag(value: str) -> bool:
    try:
        return parse_bool(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _number_or(words: tuple[str, ...]) -> Callable[[str], float | str]:
    """An argparse type for a number that also takes some words (`--audio_offset auto`)."""
    def parse(value: str) -> float | str:
        if value.strip().lower() in words:
            return value.strip().lower()
        try:
            return float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or {' or '.join(words)}, not {value!r}") from None

    return parse


def add_setting(parser: argparse.ArgumentParser, name: str, default: Any, meta: dict) -> None:
    """One flag from one declaration: its type, arity and help follow from the default."""
    flag = meta.get("flag") or f"--{name}"
    help_text = meta["help"] + (f" [${meta['env'].name}]" if meta.get("env") else "")
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": f"{help_text} (default: "
                              f"{' '.join(map(str, default)) if isinstance(default, tuple) else default})"}
    if meta.get("choices"):
        kwargs["choices"] = meta["choices"]
    if isinstance(default, bool):
        if name == "static":  # the official flag takes a value (--static True); ours also works bare
            kwargs.update(type=_bool_flag, nargs="?", const=True)
        else:
            kwargs["action"] = "store_true"
    elif isinstance(default, tuple):
        kwargs.update(type=int, nargs=len(default), metavar=meta.get("metavar"))
    elif meta.get("words"):
        kwargs.update(type=_number_or(meta["words"]), metavar=meta.get("metavar"))
    elif default is not None:
        kwargs["type"] = type(default)
    parser.add_argument(flag, **kwargs)


def add_settings(parser: argparse.ArgumentParser) -> None:
    """Every setting's flag (engine and job), in declaration order."""
    for cls in (EngineOptions, Options):
        for name, default, meta in declared(cls):
            if meta.get("cli", True):
                add_setting(parser, name, default, meta)


def given_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The setting flags given on the command line, as (engine settings, job settings) by name; flags not given
    are absent, so the declared defaults (or a manifest row's values) apply."""
    given = vars(args)
    engine = {name: given[name] for name, _, _ in declared(EngineOptions) if name in given}
    job = {name: given[name] for name, _, _ in declared(Options) if name in given}
    return engine, job


def split_args(args: argparse.Namespace) -> tuple[EngineOptions, Options]:
    """The parsed flags as the two option objects; flags not given keep their declared defaults."""
    engine, job = given_settings(args)
    return EngineOptions(**engine), Options(**job)


def stop_status(err: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM: 128 plus the signal's number, as a shell reports a killed command."""
    return 128 + int(getattr(err, "signal_number", signal.SIGINT))


def command_status(err: BaseException, stopped: str, before: Callable[[], None] = lambda: None) -> int:
    """What a command prints and returns when it ends with `err`: one sentence on stderr, never a traceback.

    `stopped`: the sentence for Ctrl-C or SIGTERM. `before` runs first (closing a progress line). Anything
    that is neither a LipSyncError nor an interruption is a bug: status 3, its traceback with LIPSYNC_DEBUG=1.
    """
    before()
    if isinstance(err, KeyboardInterrupt):
        print(stopped, file=sys.stderr)
        return stop_status(err)
    if isinstance(err, LipSyncError):  # one line per problem (a manifest may have several)
        print("\n".join(f"Error: {line}" for line in str(err).splitlines()), file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ManifestError) else EXIT_FAILED
    if not isinstance(err, Exception) or DEBUG.read():
        raise err
    print(f"Unexpected error ({type(err).__name__}: {err}). This is a bug in lipsync; rerun with LIPSYNC_DEBUG=1 "
          "for the details and report them.", file=sys.stderr)
    return EXIT_BUG


def log_to_stderr(quiet: bool) -> None:
    """The package's warnings as bare lines on stderr (with --quiet, errors only)."""
    logging.basicConfig(level=logging.ERROR if quiet else logging.WARNING, format="%(message)s", stream=sys.stderr)


Progress = Callable[[str, int, int], None]


@contextlib.contextmanager
def stoppable(progress: Progress) -> Iterator[Progress]:
    """`progress` that also stops the work at its next step on Ctrl-C or SIGTERM, even one that Python swallowed
    (lipsync.runtime.interrupts), for as long as the block runs; the signal handlers are restored after."""
    stop = InterruptFlag()
    try:
        yield lambda stage, done, total: (stop.check(), progress(stage, done, total))
    finally:
        stop.restore()
