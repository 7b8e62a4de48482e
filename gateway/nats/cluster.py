"""Configuration of a NATS cluster node for SQAL (docs/scale-out.md), and a small launcher of such
nodes on one machine (tests and benchmarks run a 3-node cluster on loopback with it).

A node: JetStream on disk (server name unique in the cluster), an MQTT listener for the boards, routes
to the other nodes, account SQAL with the gateway's user (full rights in the account) and the boards'
(the contract's subjects; per-device identities come from the auth callout, docs/security.md).
With three nodes the SQAL streams are created with 3 replicas (SQAL_NATS_REPLICAS=3) and the
engine's own MQTT session streams pick 3 too: any one node can be lost without losing a reading
or a session.

    sqal engine config --name n1 --store /var/lib/nats --route nats-route://10.0.0.2:6222 ... > n1.conf
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER_NAME = "sqal"


def _q(s: str) -> str:
    return json.dumps(s)


@dataclass
class NodeConfig:
    name: str
    store_dir: Path
    client_host: str = "0.0.0.0"
    client_port: int = 4222
    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = 1883
    route_host: str = "0.0.0.0"
    route_port: int = 6222
    routes: list[str] = field(default_factory=list)  # nats-route://host:port of the other nodes
    gateway_user: str = "sqal-gateway"
    gateway_password: str = ""
    device_user: str = "sqal-device"
    device_password: str = ""
    anonymous_devices: bool = False  # MQTT clients without credentials are the boards' user (lab only)
    max_file_store: int = 0
    # replicas of the engine's own MQTT streams (sessions, QoS 1 messages, retained): set, not left
    # to the server, which picks from the nodes it knows of when the first board connects (2 in a
    # cluster still forming was seen), and a stream on 2 replicas stalls when one of them is lost
    mqtt_stream_replicas: int = 3

    def render(self) -> str:
        js = [f"store_dir: {_q(str(self.store_dir))}", "max_memory_store: 268435456"]
        if self.max_file_store:
            js.append(f"max_file_store: {self.max_file_store}")
        perms = '{publish: ["sqal.v1.>"], subscribe: ["sqal.v1.>"]}'
        lines = [
            "# SQAL message engine node (gateway/nats/cluster.py, docs/scale-out.md)",
            f"server_name: {_q(self.name)}",
            f"listen: {_q(f'{self.client_host}:{self.client_port}')}",
            "max_payload: 65536",
            f"jetstream {{ {', '.join(js)} }}",
            (f"mqtt {{ listen: {_q(f'{self.mqtt_host}:{self.mqtt_port}')}, "
            f"stream_replicas: {self.mqtt_stream_replicas} }}"),
            "accounts {",
            (f"  SQAL {{ jetstream: enabled, users: [ {{user: {_q(self.gateway_user)}, "
            f"password: {_q(self.gateway_password)}}}, {{user: {_q(self.device_user)}, "
            f"password: {_q(self.device_password)}, permissions: {perms}, "
            # the boards' user is for MQTT only: a NATS client cannot log in as it (nor, with
            # anonymous_devices, as nobody)
            'allowed_connection_types: ["MQTT"]} ] }'),
            "  SYS { users: [] }",
            "}",
            "system_account: SYS",
        ]
        if self.anonymous_devices:
            lines.append(f"no_auth_user: {_q(self.device_user)}")
        if self.routes or self.route_port:
            routes = ", ".join(_q(r) for r in self.routes)
            lines.append(f"cluster {{ name: {_q(CLUSTER_NAME)}, listen: {_q(f'{self.route_host}:{self.route_port}')}, "
                         f"routes: [ {routes} ] }}")
        return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """N nodes of a cluster on loopback, as child processes (tests, benchmarks): start, kill -9 a
    node, start it again with its store kept."""

    def __init__(self, workdir: Path, n: int = 3, *, gateway_password: str = "gw-secret",
                 anonymous_devices: bool = True) -> None:
        from gateway.nats.embedded import nats_server_binary

        self.binary = nats_server_binary()
        self.workdir = Path(workdir)
        self.gateway_password = gateway_password
        ports = [(_free_port(), _free_port(), _free_port()) for _ in range(n)]
        self.nodes = [
            NodeConfig(name=f"n{i + 1}", store_dir=self.workdir / f"n{i + 1}" / "jetstream", client_host="127.0.0.1",
                       client_port=c, mqtt_host="127.0.0.1", mqtt_port=m, route_host="127.0.0.1", route_port=r,
                       routes=[f"nats-route://127.0.0.1:{ports[j][2]}" for j in range(n) if j != i],
                       gateway_password=gateway_password, device_password="device-secret",
                       anonymous_devices=anonymous_devices, mqtt_stream_replicas=min(n, 3))
            for i, (c, m, r) in enumerate(ports)
        ]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n

    def nats_urls(self, with_credentials: bool = True) -> list[str]:
        cred = f"sqal-gateway:{self.gateway_password}@" if with_credentials else ""
        return [f"nats://{cred}127.0.0.1:{n.client_port}" for n in self.nodes]

    def mqtt_urls(self) -> list[str]:
        return [f"mqtt://127.0.0.1:{n.mqtt_port}" for n in self.nodes]

    def start(self, i: int | None = None) -> None:
        for k in range(len(self.nodes)) if i is None else [i]:
            node = self.nodes[k]
            d = self.workdir / node.name
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "nats.conf"
            conf.write_text(node.render())
            log = open(d / "nats.log", "ab")  # noqa: SIM115 - handed to the child
            self.procs[k] = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
        for k in range(len(self.nodes)) if i is None else [i]:
            self._wait_port(self.nodes[k].mqtt_port, k)

    def _wait_port(self, port: int, k: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            p = self.procs[k]
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"node {self.nodes[k].name} exited {p.returncode}:\n{self.log(k)[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"node {self.nodes[k].name} not listening on {port} after {timeout:.0f} s")

    def kill(self, i: int) -> None:
        """kill -9: the node's store stays on disk, its clients lose their connection."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)
        self.procs[i] = None

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for i, p in enumerate(self.procs):
            if p is not None:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
            self.procs[i] = None

    def log(self, i: int) -> str:
        try:
            return (self.workdir / self.nodes[i].name / "nats.log").read_text(errors="replace")
        except OSError:
            return ""
