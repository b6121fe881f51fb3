"""The one exception type a user ever sees.

Every failure the user can act on (a bad file, missing weights, no face) is raised as
`LipSyncError` with a sentence that names the problem and the fix. The CLI prints that
sentence and exits non-zero; the app shows it as a `gr.Error`. Anything else escaping
the engine is a bug, not a user error.
"""


class LipSyncError(Exception):
    """A problem with the user's input or setup, worded for the user."""
