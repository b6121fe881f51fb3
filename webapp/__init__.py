"""The lipsync web app: the page, the Live page, the /lipsync API and MCP tool, on Gradio.

    config.py   every setting of the server, read from the environment once (AppConfig)
    server.py   WebApp: one server's parts, made together in main(); serve()
    page.py     the main page's layout and events
    jobs.py     the page's handlers: the job (plain and streamed), preview, face check, checks before a job
    api.py      the handlers' signatures for the API, and the /lipsync description
    stream.py   the streamed result's players
    live.py     the Live page and its two routes (/live/stream, /live/audio)
    live_transport.py  what bounds them: one frame handed over at a time, capped POSTs, stalled readers
    lanes.py    the queue in lanes: one visitor, or one address, cannot fill it
    files.py    the app's folders on disk, the cleaner, downloads capped at the upload limit
    static/     the Live page's client (live.js)

It uses the lipsync package's public API only (`import lipsync`, and `lipsync.environment` for variables).
Importing it imports Gradio, which reads GRADIO_TEMP_DIR then: app.py claims that folder first.
"""

from .config import AppConfig
from .server import WebApp

__all__ = ["AppConfig", "WebApp"]
