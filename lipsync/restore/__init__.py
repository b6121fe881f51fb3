"""Restoring the mouth's detail after the lip sync (--enhance gfpgan).

    gfpgan.py     GFPGAN v1.4's network, written here, and its release file's layout
    landmarks.py  five face landmarks (MediaPipe's face mesh on OpenVINO) to align a face for the restorer
    backends.py   which library runs the restorer: PyTorch on a GPU, OpenVINO fp32 on a CPU (cached), the fallback
    enhance.py    align, restore, warp back, colour-match, and let it in through the mouth mask only
"""
