"""The gateway: ``voxpipe serve``, endpoints that existing speech-API clients talk to unchanged.

Every client connection (a Deepgram live WebSocket, an OpenAI REST upload or
Realtime session, a whisper_streaming TCP socket) becomes its own stream on
the bus (``audio.<stream>``) and reads its results from the transcript topics
of a worker pool (``transcript.<pool>.<stream>``, ``partial.<pool>.<stream>``)
and the VAD's ``speech.<stream>``. Modules:

* :mod:`.actor`: the bus side (a :class:`workers.base.Actor`) and the command line;
* :mod:`.hub`: the one object the bus thread and the server thread share;
* :mod:`.bus_stream`: one connection's audio on the bus, in segments;
* :mod:`.results`: bus messages of one connection turned into protocol-neutral results;
* :mod:`.audio_in`: client audio (raw PCM, G.711, containers through PyAV) to 16 kHz;
* :mod:`.access`: API keys and per-connection limits;
* :mod:`.context`: what every endpoint shares: pool choice and admission (key, worker up, room);
* :mod:`.deepgram`, :mod:`.openai_rest`, :mod:`.realtime`, :mod:`.tcp`: one protocol each;
* :mod:`.app`: the ASGI application (Starlette) that routes to them.

What each endpoint supports, maps and refuses: ``docs/compatibility.md``.
"""
