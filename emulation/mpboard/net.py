# Emulated WiFi link over host sockets. The host can take the link down and up; while down, new
# connections fail with EHOSTUNREACH and every open connection dies at once (reads raise ENOTCONN,
# writes EPIPE), as a TCP stack does when the interface goes away. The firmware reaches the link
# through its board (board.open_connection, board.getaddrinfo): nothing global is patched, so
# several boards in one process each have their own link.
#
# DNS: the host's resolver, except when `dns_fail_s` is set: then a lookup of a name blocks the
# caller (the whole event loop, as lwIP's getaddrinfo blocks MicroPython) for that many seconds
# and fails, which is what an ESP32 does when its DNS servers do not answer (docs/firmware.md).
import asyncio
import errno
import socket
import time
from asyncio import core  # type: ignore[attr-defined]  # MicroPython's asyncio has its core module; the stubs do not

from sqalfw.link import is_ip

_orig_open_connection = asyncio.open_connection
EAI_FAIL = -202  # what the ESP32 port raises for a failed lookup (lwIP's EAI_FAIL, negated)


class Link:
    def __init__(self):
        self.host_up = True     # set by the host (control file)
        self.wanted = False     # the firmware called wlan.connect()
        self._streams = []
        self.cuts = 0
        self.dns_fail_s = 0.0   # >0: a lookup of a name blocks this long, then fails
        self.lookups = 0        # lookups that reached the (emulated) DNS servers

    def getaddrinfo(self, host, port):
        if is_ip(host):  # an address is parsed, never sent to a DNS server
            return socket.getaddrinfo(host, port)
        if not self.is_up():
            raise OSError(EAI_FAIL)
        self.lookups += 1
        if self.dns_fail_s:
            time.sleep(self.dns_fail_s)
            raise OSError(EAI_FAIL)
        return socket.getaddrinfo(host, port)

    def is_up(self):
        return self.host_up and self.wanted

    async def open_connection(self, host, port, *args, **kw):
        if not self.is_up():
            raise OSError(errno.EHOSTUNREACH)
        r, w = await _orig_open_connection(host, port, *args, **kw)
        if not self.is_up():  # went down while connecting
            _kill(w)
            raise OSError(errno.EHOSTUNREACH)
        # forget streams the firmware already closed (bounded list)
        self._streams = [s for s in self._streams if _alive(s)]
        self._streams.append(w)
        return r, w

    def close_all(self):
        """Every open connection dies at once (the board lost power: the host closes its sockets)."""
        for s in self._streams:
            _kill(s)
        self._streams = []

    def set_host_up(self, up):
        if up == self.host_up:
            return
        self.host_up = up
        if not up:
            self.cuts += 1
            for s in self._streams:
                _kill(s)
            self._streams = []


def _alive(stream):
    s = getattr(stream, "s", None)
    return s is not None and not isinstance(s, _DeadSocket)


class _DeadSocket(socket.socket):
    pass


def _kill(stream):
    # MicroPython's Stream holds the socket in .s (reader and writer are one object). Closing the
    # socket alone would leave a task blocked in read() asleep forever, so: swap in an unconnected
    # socket (reads -> ENOTCONN, writes -> EPIPE, poll reports HUP), wake the waiting tasks, close.
    s = getattr(stream, "s", None)
    if s is None or isinstance(s, _DeadSocket):
        return
    dead = _DeadSocket()
    dead.setblocking(False)
    stream.s = dead
    waiting = core._io_queue.map.get(id(s))
    if waiting:
        core._io_queue._dequeue(s)
        for t in waiting[:2]:
            if t is not None:
                core._task_queue.push(t)
    try:
        s.close()
    except OSError:
        pass


class Wlan:
    """network.WLAN-like view of the link for the firmware."""

    def __init__(self, link, rssi=-61):
        self._link = link
        self._rssi = rssi

    def isconnected(self):
        return self._link.is_up()

    def connect(self, ssid, password):
        self._link.wanted = True

    def rssi(self):
        return self._rssi if self._link.is_up() else 0

