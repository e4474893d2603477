"""One BLAS thread per process, set before numpy is first imported (``voxpipe`` and the measuring scripts).

Two reasons. Idle BLAS threads spin while they wait, and the matrix products on
voxpipe's hot paths (mel filters, small VAD tensors) are far too small to gain
from them: the spinning cost a worker about 50 % more CPU per decode (0.32
against 0.20 CPU s for 5 s of audio). And the thread count changes the order
in which sums are taken, so the features, and with tiny.en sometimes the words,
differ: one offline pass of the weather clip makes 6 errors with two threads
and 10 with one (docs/benchmarks.md, "How firm is the offline reference?"). A
pass and the pipeline it is compared with must run with the same setting.
Users may set either variable themselves.
"""

from __future__ import annotations

import os

VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    for name in VARIABLES:
        os.environ.setdefault(name, "1")
