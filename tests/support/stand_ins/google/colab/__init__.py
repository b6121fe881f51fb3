"""A stand-in for Colab's `google.colab` package, for running the notebook headless in tests only.

`google/` here has no __init__.py on purpose: it stays a namespace package, so putting
tests/stand_ins on the path adds `google.colab` without hiding `google.protobuf`.
"""
