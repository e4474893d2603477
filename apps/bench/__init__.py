"""``voxpipe bench``: accuracy, latency, cost and capacity measured on the real pipeline.

Modules, one concept each:

* :mod:`.corpus`: the clips (WAV + ``.json`` with ``text``) and their selection;
* :mod:`.sampler`: CPU seconds and RSS of every actor process (psutil);
* :mod:`.watch`: what the bench sees on the bus (commits, speech events, heartbeats);
* :mod:`.session`: the pipeline's processes on a private bus, and rounds of captures;
* :mod:`.metrics`: figures per stream, per round and overall (missing ones say why);
* :mod:`.offline`: offline WER and an in-process replay of the worker's decodes;
* :mod:`.transport`: one-hop latency and throughput of the real broker;
* :mod:`.capacity`: the search for the number of real-time streams one worker holds;
* :mod:`.targets`, :mod:`.report`, :mod:`.plot`, :mod:`.machine`: the outputs;
* :mod:`.cli`: the command and the order of the phases.
"""
