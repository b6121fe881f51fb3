"""Command-line flags made from the setting declarations (lipsync.options), for every command that takes them."""

from __future__ import annotations

import argparse
from typing import Any


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got '{value}'")


def add_setting(parser: argparse.ArgumentParser, name: str, default: Any, meta: dict) -> None:
    """One flag from one declaration: its type, arity and help follow from the default."""
    flag = meta.get("flag") or f"--{name}"
    help_text = meta["help"] + (f" [${meta['env']}]" if meta.get("env") else "")
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": f"{help_text} (default: "
                              f"{' '.join(map(str, default)) if isinstance(default, tuple) else default})"}
    if meta.get("choices"):
        kwargs["choices"] = meta["choices"]
    if isinstance(default, bool):
        if name == "static":  # the official flag takes a value (--static True); ours also works bare
            kwargs.update(type=_bool, nargs="?", const=True)
        else:
            kwargs["action"] = "store_true"
    elif isinstance(default, tuple):
        kwargs.update(type=int, nargs=len(default), metavar=meta.get("metavar"))
    elif default is not None:
        kwargs["type"] = type(default)
    parser.add_argument(flag, **kwargs)
