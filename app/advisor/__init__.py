"""The fit advisor: how much memory a model takes where, and a placement that fits a machine.

Pure functions over ``app.gguf.info`` (what a model is) and ``app.hardware`` (what a machine
has); no Qt, no llama.cpp.
"""
