# What both transports (MQTT client, WebSocket transport) share: the millisecond tick clock and the
# supervision loop that keeps one connection up.

import asyncio
import time

if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
else:  # CPython: tests and host tools
    _mono = getattr(time, "monotonic")

    def ticks_ms():  # type: ignore[misc]
        return int(_mono() * 1000)

    def ticks_diff(a, b):  # type: ignore[misc]
        return a - b


async def keep_connected(t):
    """Connect, wait for the connection to drop, back off, repeat, until `t._running` is cleared.

    `t` is a transport offering connect(), is_link_up (callable or None), link_poll_s, backoff,
    stable_s, the `_down` event set when the connection is lost, and the counters
    connect_failures / last_error. No attempt is made while the board says the link is down."""
    t._running = True
    while t._running:
        if t.is_link_up is not None and not t.is_link_up():
            await asyncio.sleep(t.link_poll_s)
            continue
        try:
            await t.connect()
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            t.connect_failures += 1
            t.last_error = "connect: %r" % (ex,)
            await asyncio.sleep(t.backoff.next())
            continue
        up_at = ticks_ms()
        await t._down.wait()
        if not t._running:
            break
        # only a connection that stayed up a while resets the backoff (no flapping storms)
        if ticks_diff(ticks_ms(), up_at) >= t.stable_s * 1000:
            t.backoff.reset()
        await asyncio.sleep(t.backoff.next())


async def wait_up(t, timeout=None):
    """True once transport `t` is connected (its `_up` flag and `_upev` event), False on timeout."""
    if t._up:
        return True
    try:
        if timeout is None:
            await t._upev.wait()
        else:
            await asyncio.wait_for(t._upev.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return t._up
