# What both transports (MQTT client, WebSocket transport) share: the millisecond tick clock, the
# DNS cache, and the supervision loop that keeps one connection up.

import asyncio
import socket
import time

if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
else:  # CPython: tests and host tools
    _mono = getattr(time, "monotonic")  # noqa: B009  (the board's time has none: its stubs do not know it)

    def _host_ticks_ms():
        return int(_mono() * 1000)

    def _host_ticks_diff(a, b):
        return a - b

    ticks_ms = _host_ticks_ms
    ticks_diff = _host_ticks_diff


def print_log(msg):
    """The default log of a transport made without one (tests, host tools): the serial console."""
    print("sqal: " + msg)


def is_ip(host):
    """An IPv4 dotted quad or an IPv6 address (it has a colon): used as it is, never looked up."""
    if ":" in host:
        return True
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3:
            return False
        for c in p:
            if not "0" <= c <= "9":
                return False
        if int(p) > 255:
            return False
    return True


def inet_host(ai):
    """The first IPv4 address of a getaddrinfo() answer, as text, or None. MicroPython's unix port
    gives the raw sockaddr bytes (family, port, 4 address bytes); the ESP32 and CPython give (ip, port)."""
    for fam, _t, _p, _c, sa in ai:
        if fam != socket.AF_INET:
            continue
        if isinstance(sa, tuple):
            return sa[0]
        return "%d.%d.%d.%d" % (sa[4], sa[5], sa[6], sa[7])
    return None


class Resolver:
    """DNS with a memory: the last good address of every name looked up.

    On a board a lookup blocks the whole event loop, and when the DNS server does not answer lwIP
    keeps asking for up to 14 s (docs/firmware.md, "Blocking calls and the watchdog"). So a name is
    looked up only when it has to be:
      - an IP address is never looked up;
      - a name whose address is cached is given that address, until the caller reports that a
        connection to it failed (failed()): the address may have moved, so the next resolve()
        looks the name up afresh;
      - a lookup that failed is not tried again for `hold_s` (the next one would block as long):
        meanwhile the cached address is given if there is one, else OSError at once.
    A failed lookup that falls back on a cached address is logged."""

    def __init__(self, getaddrinfo, log=None, hold_s=60, max_names=8):
        self._getaddrinfo = getaddrinfo
        self._log = log or print_log
        self.hold_s = hold_s
        self.max_names = max_names
        self._names = {}  # name -> [address or None, stale, ticks of the last failed lookup or None]
        self.lookups = 0
        self.failures = 0

    def cached(self, host):
        e = self._names.get(host)
        return e[0] if e is not None else None

    def resolve(self, host, port):
        """The address to connect to for `host` (text). Raises OSError naming the host."""
        if is_ip(host):
            return host
        e = self._names.get(host)
        if e is not None and e[0] is not None and not e[1]:
            return e[0]
        if e is not None and e[2] is not None and ticks_diff(ticks_ms(), e[2]) < self.hold_s * 1000:
            if e[0] is not None:
                return e[0]
            raise OSError("dns: %s did not resolve; next lookup within %d s" % (host, self.hold_s))
        self.lookups += 1
        try:
            addr = inet_host(self._getaddrinfo(host, port))
            if addr is None:
                raise OSError("no IPv4 address")
        except OSError as ex:
            self.failures += 1
            if e is None:
                e = self._entry(host)
            e[2] = ticks_ms()  # the hold counts from the end of the (possibly long) lookup
            if e[0] is not None:
                self._log("dns: lookup of %s failed (%r): using its last good address %s" % (host, ex, e[0]))
                return e[0]
            raise OSError("dns: lookup of %s failed: %r" % (host, ex))
        e = e or self._entry(host)
        e[0] = addr
        e[1] = False
        e[2] = None
        return addr

    def failed(self, host):
        """A connection to the address given for `host` failed: look the name up afresh next time."""
        e = self._names.get(host)
        if e is not None:
            e[1] = True

    def _entry(self, host):
        if len(self._names) >= self.max_names:  # bounded: a board talks to a handful of names
            for k in self._names:
                del self._names[k]
                break
        e = [None, False, None]
        self._names[host] = e
        return e


async def keep_connected(t):
    """Connect, wait for the connection to drop, back off, repeat, until `t._running` is cleared.

    `t` is a transport offering connect(), is_link_up (callable or None), hold (callable or None:
    why no attempt may be made now, e.g. TLS waiting for the clock, else None), log, link_poll_s,
    backoff, stable_s, the `_down` event set when the connection is lost, and the counters
    connect_failures / last_error. No attempt is made while the board says the link is down or
    while hold() gives a reason; the reason is logged once, when it appears."""
    t._running = True
    held = None
    while t._running:
        if t.is_link_up is not None and not t.is_link_up():
            await asyncio.sleep(t.link_poll_s)
            continue
        why = t.hold() if t.hold is not None else None
        if why is not None:
            if why != held:
                held = why
                t.log(why)
            await asyncio.sleep(t.link_poll_s)
            continue
        held = None
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


async def open_stream(open_connection, resolver, host, port, ssl=None, timeout=10):
    """One TCP (TLS) connection through the board's `open_connection`, to the address `resolver`
    gives for `host` (TLS still checks the certificate against `host`). A connection that fails
    tells the resolver, so that the next attempt looks the name up again (it may have moved)."""
    addr = resolver.resolve(host, port)
    try:
        if ssl:
            coro = open_connection(addr, port, ssl=ssl, server_hostname=host)
        else:
            coro = open_connection(addr, port)
        return await asyncio.wait_for(coro, timeout)
    except (OSError, asyncio.TimeoutError):
        resolver.failed(host)
        raise


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
