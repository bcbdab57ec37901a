"""Bundled reference WebSocket servers: demos, test fixtures and the default soak target.

- :mod:`runner.targets.echo`  a clean echo server.
- :mod:`runner.targets.leaky` the incident: per-user state stored on connect, never removed.

Each runs as ``python -m runner.targets.NAME --port PORT`` and stops cleanly on SIGTERM.
"""
