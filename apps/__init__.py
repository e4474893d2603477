"""The applications: the voxpipe command line, the launcher, transcribe, exports and the bench.

The top layer: it may import ``workers``, ``pipeline`` and ``asr_core``; nothing imports it.
"""
