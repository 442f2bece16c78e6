"""The hardened Redis transport (worker/broker.py) against a real Redis.

kombu 5.7 leaves `transport.client = None` when it releases a connection, and a channel that is
closed (restoring its unacked messages) or a message acked afterwards rebuilt its pool from that
None: an AttributeError that killed the Celery worker when Redis restarted mid-task. With our
transport both are connection errors, which kombu and Celery handle (ignore while closing, log a
failed ack, reconnect), and the message stays unacked in Redis for redelivery.
"""
from __future__ import annotations

import pytest
import redis
from kombu import Connection, Producer, Queue

from tests.integration.services import redis_server, redis_url  # noqa: F401
from evoforge.worker.broker import TRANSPORT
from evoforge.worker.celery_app import make_app

pytestmark = pytest.mark.integration


def _fetched_unacked(url: str, transport: str):
    conn = Connection(url, transport=transport)
    channel = conn.channel()
    queue = Queue("broker-test", routing_key="broker-test")
    Producer(channel).publish({"n": 1}, routing_key="broker-test", declare=[queue])
    message = queue(channel).get(no_ack=False)
    assert message is not None and message.payload == {"n": 1}
    return conn, channel, message


def test_released_transport_reads_as_a_lost_connection(redis_url):
    conn, channel, message = _fetched_unacked(redis_url, TRANSPORT)
    conn.transport.client = None            # what kombu leaves behind after releasing it
    conn.maybe_close_channel(channel)       # restore_unacked: ignored as a connection error
    assert channel.closed
    with pytest.raises(conn.connection_errors):  # a late ack: logged by Celery, not fatal
        message.ack()
    # the message was neither acked nor lost: it waits in the unacked index for redelivery
    r = redis.Redis.from_url(redis_url)
    assert r.zcard("unacked_index") == 1
    r.close()


def test_the_app_uses_the_hardened_transport(redis_url):
    app = make_app(redis_url)
    with app.connection_for_write() as conn:
        assert conn.transport_cls == TRANSPORT
        conn.ensure_connection(max_retries=1)
        assert conn.connected
