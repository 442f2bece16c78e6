"""The Redis broker transport: kombu's, hardened against a broker restart.

kombu 5.7 can close a channel (restoring its unacknowledged messages) or ack a finished task
after the transport's connection has already been released; the channel then rebuilds its
connection pool from `transport.client`, which is None by then, and the AttributeError escapes
Celery's connection-error handling and kills the worker ("Unrecoverable error"), seen when Redis
restarts while tasks run. Here a released transport reads as what it is, a lost connection:
kombu ignores that while closing, logs a failed ack, and reconnects. Nothing is lost by it: an
unacknowledged message stays in Redis's unacked index and is redelivered, and commits are
idempotent per (campaign, iteration).
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False):
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was released")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
