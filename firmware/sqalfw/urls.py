# URLs the firmware takes, one module for every side: the board's config (sqalfw.config), its
# transports, the gateway's MQTT client and the emulated fleets read them with these functions.
#   mqtt://[user[:pass]@]host[:port]   mqtts://...        (1883 / 8883)
#   ws://[user:pass@]host[:port][/path]  wss://...        (80 / 443)
# Each parser raises ValueError naming the part that is wrong. MicroPython-compatible.

def parse_broker_url(url):
    """mqtt://[user[:pass]@]host[:port] or mqtts://... -> dict(host, port, user, password, tls).

    Raises ValueError naming the part that is wrong."""
    if not isinstance(url, str):
        raise ValueError("not a string")
    if url.startswith("mqtt://"):
        tls, rest, port = False, url[7:], 1883
    elif url.startswith("mqtts://"):
        tls, rest, port = True, url[8:], 8883
    else:
        raise ValueError("scheme must be mqtt:// or mqtts://")
    if "/" in rest:
        rest = rest[:rest.index("/")]
    user = password = None
    if "@" in rest:
        cred, rest = rest.rsplit("@", 1)
        if ":" in cred:
            user, password = cred.split(":", 1)
        else:
            user = cred
        if not user:
            raise ValueError("empty user name")
    host, port = split_hostport(rest, port)
    return {"host": host, "port": port, "user": user, "password": password, "tls": tls}


def split_hostport(rest, port):
    """'host', 'host:port' or '[ipv6]:port' -> (host, port); `port` is the scheme's default."""
    host = rest
    if rest.startswith("["):  # [ipv6]:port
        end = rest.find("]")
        if end < 0:
            raise ValueError("unclosed [ in host")
        host, rest = rest[1:end], rest[end + 1:]
        if rest.startswith(":"):
            port = _port(rest[1:])
        elif rest:
            raise ValueError("junk after host")
    elif ":" in rest:
        host, p = rest.rsplit(":", 1)
        port = _port(p)
    if not host:
        raise ValueError("missing host")
    return host, port


def hide_password(url):
    """The URL with its password replaced by ***: what a log line or an error may show."""
    if isinstance(url, str) and "@" in url and "://" in url:
        head, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            return head + "://" + cred.split(":", 1)[0] + ":***@" + host
    return url


def _port(text):
    for c in text:
        if not "0" <= c <= "9":
            raise ValueError("port must be 1..65535")
    if not text or not 1 <= int(text) <= 65535:
        raise ValueError("port must be 1..65535")
    return int(text)


MAX_BROKERS = 5  # broker_url as a list: the nodes of a cluster, tried in turn


def parse_broker_urls(v):
    """broker_url: one URL, or a list of 1..MAX_BROKERS URLs of the nodes of one cluster (the same
    credentials and the same scheme on each: one identity, one TLS policy). -> [parsed, ...];
    ValueError names what is wrong."""
    urls = [v] if isinstance(v, str) else v
    if not isinstance(urls, list) or not 1 <= len(urls) <= MAX_BROKERS:
        raise ValueError("a URL or a list of 1 to %d URLs" % MAX_BROKERS)
    out = []
    for i, u in enumerate(urls):
        try:
            b = parse_broker_url(u)
        except ValueError as e:
            raise ValueError(("URL %d: %s" % (i + 1, e)) if isinstance(v, list) else str(e))
        if out and (b["user"], b["password"], b["tls"]) != (out[0]["user"], out[0]["password"], out[0]["tls"]):
            raise ValueError("URL %d: every URL must have the same scheme and credentials as the first" % (i + 1))
        out.append(b)
    return out


def parse_ws_url(url):
    """ws://[user:pass@]host[:port][/path] or wss://... -> (tls, host, port, path, user, password).

    ValueError names the part that is wrong. user/password (None when absent) go in an
    `Authorization: Basic` header: the gateway's device authentication."""
    if not isinstance(url, str):
        raise ValueError("not a string")
    if url.startswith("ws://"):
        tls, rest, port = False, url[5:], 80
    elif url.startswith("wss://"):
        tls, rest, port = True, url[6:], 443
    else:
        raise ValueError("scheme must be ws:// or wss://")
    path = "/"
    i = rest.find("/")
    if i >= 0:
        rest, path = rest[:i], rest[i:]
    user = password = None
    if "@" in rest:
        cred, rest = rest.rsplit("@", 1)
        user, sep, password = cred.partition(":")
        if not user or not sep:
            raise ValueError("credentials must be user:password")
    host, port = split_hostport(rest, port)
    for c in path:
        if c <= " " or c == "\x7f":
            raise ValueError("spaces or control characters in the path")
    return tls, host, port, path, user, password
