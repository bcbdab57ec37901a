"""The load driver: Locust in library mode, running WebSocket churn users.

Importing this package imports Locust, which monkey-patches the standard library for
gevent; import it before anything that opens sockets or starts threads.
"""
