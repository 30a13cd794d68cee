"""Defaults shared by several layers, written once."""

NUM_FRAMES = 12  # frames sampled per video (the paper's 12, uniformly over the video)
