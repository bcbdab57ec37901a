"""The load generator: Locust in library mode, running WebSocket churn users.

This package's ``__init__`` imports nothing. Importing :mod:`runner.load.driver` (or
``user``, ``worker``) imports Locust, which monkey-patches the standard library for gevent:
import it before anything that opens sockets or starts threads. :mod:`runner.load.steps`
and :mod:`runner.load.capacity` are pure and safe to import anywhere.
"""
