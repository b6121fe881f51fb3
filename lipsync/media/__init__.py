"""Media in and out: what a file is (probe), limits checked from its header, frames and sound decoded through
ffmpeg, the mel windows the model reads, the face input as prepared frames, and the MP4 and its streamed segments.

    ffmpeg.py    running the bundled ffmpeg safely (argument lists, whitelisted demuxers, a watchdog)
    probe.py     what an input file is, before any of it is decoded
    limits.py    what one job may cost, checked from the headers
    audio.py     any audio -> 16 kHz mono -> mel spectrogram -> one window per frame (and MelStream for live)
    video.py     frames in and out through ffmpeg; the display copy of the original
    source.py    the face input as a re-readable stream of prepared frames (resize, rotate, crop)
    segments.py  MPEG-TS segments from the job's one encode (the streamed result), and a job on a thread
"""
