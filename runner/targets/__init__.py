"""Bundled WebSocket servers: the default soak target, demos and test fixtures.

- :mod:`runner.targets.echo`       a clean echo server (``make soak``).
- :mod:`runner.targets.leaky`      the incident: per-user state stored on connect, never removed.
- :mod:`runner.targets.chat`       rooms and broadcast with an auth message, for scenarios.
- :mod:`runner.targets.asgi_app`   a Starlette WebSocket echo under uvicorn (one or more workers).
- :mod:`runner.targets.multiproc`  several processes sharing one port (pre-fork servers).
- :mod:`runner.targets.faulty`     crashes, hangs and refusals on demand, for the fault tests.

Each runs as ``python -m runner.targets.NAME --port PORT`` and stops cleanly on SIGTERM.
"""
