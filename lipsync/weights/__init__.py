"""Model files: where they come from, how they are read, and what is made from them once.

    locate.py          finding checkpoints on disk, or downloading them (pinned by size and SHA256, with progress)
    unpickle.py        the allow-list unpickler: a checkpoint's pickle read into recipes for tensors, never code
    formats.py         torch's two file formats (zip and legacy): where each storage's bytes are, read within bounds
    reader.py          read_tensors: the one safe reader for every model, its layout checked before any data
    openvino_cache.py  OpenVINO models built once from the weights, cached on disk by their hash, verified
"""
