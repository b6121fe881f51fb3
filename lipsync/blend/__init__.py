"""Putting the generated mouth back into the frame.

    paste.py   the blend modes: 'box' (the official paste), 'feather', 'mouth' (a soft, colour-matched mask)
    pauses.py  pauses in the speech -> one weight per frame, so a silent face keeps its own mouth
"""
