"""Live lip-sync: audio chunks in, frames out, each with its own sound.

    avatar.py    a photo or short clip prepared once (faces found, crops cut), looped without a jump
    session.py   LiveSync (frames from audio, no clock) and LiveSession (a clock, idle frames, limits, one slot)
    messages.py  the Live page's wire format: microphone pieces up, frames with their sound down
"""
