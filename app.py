"""Start the lipsync web app (what `python app.py` and Hugging Face Spaces run).

    python app.py [--host 0.0.0.0] [--port 7860] [--share] [--mcp] [--fetch-weights]

Importing this file does nothing: no variable set, no thread, no file. `main()` reads the settings
(webapp.config), points Gradio's temp files at the app's own folder (Gradio reads GRADIO_TEMP_DIR
when it is imported, so this comes first), imports ZeroGPU's `spaces` where it runs (before torch),
then builds the app and serves it. The app itself is the `webapp` package; see docs/architecture.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def parse_args(argv: list[str] | None, defaults: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Start the lipsync web app.")
    parser.add_argument("--host", default=defaults["host"],
                        help="address to listen on (0.0.0.0 for every interface) [$LIPSYNC_HOST]")
    parser.add_argument("--port", type=int, default=defaults["port"], help="port [$LIPSYNC_PORT]")
    parser.add_argument("--share", action="store_true", default=defaults["share"],
                        help="also serve on a public gradio.live link [$LIPSYNC_SHARE=1]")
    parser.add_argument("--fetch-weights", action=argparse.BooleanOptionalAction, default=defaults["fetch_weights"],
                        help="download missing weights before serving (default: on Hugging Face Spaces only)")
    parser.add_argument("--mcp", action=argparse.BooleanOptionalAction, default=defaults["mcp"],
                        help="also serve the lip sync as an MCP tool at /gradio_api/mcp/ (needs gradio[mcp]) "
                             "[$LIPSYNC_MCP=1]")
    return parser.parse_args(argv)


def import_spaces() -> Any:
    """Hugging Face's `spaces` package where it is installed (on ZeroGPU it must be imported before torch: the GPU
    is attached only inside decorated calls; elsewhere its decorator does nothing), else None."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def main(argv: list[str] | None = None) -> None:
    import lipsync  # first: sets the threading environment before torch loads
    from webapp.config import AppConfig, network_defaults
    from webapp.files import claim_gradio_temp

    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests are not news
    try:
        args = parse_args(argv, network_defaults())
        config = AppConfig.from_environment()
    except lipsync.LipSyncError as err:
        sys.exit(f"lipsync: {err}")
    gradio_dir = claim_gradio_temp(config.output_root)
    spaces = import_spaces()
    from webapp import WebApp  # imports gradio, which reads GRADIO_TEMP_DIR now

    web = WebApp(config, spaces, gradio_dir)
    web.prepare(fetch=args.fetch_weights)
    web.serve(args.host, args.port, share=args.share, mcp=args.mcp)


if __name__ == "__main__":
    main()
