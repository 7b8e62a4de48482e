"""`sqal engine ...`: the message engine for a cluster (docs/scale-out.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.nats.cluster import NodeConfig

engine_app = typer.Typer(name="engine", help="The NATS message engine: node configuration for a cluster.",
                         no_args_is_help=True)


@engine_app.command("config")
def config_cmd(
    name: Annotated[str, typer.Option("--name", help="Server name, unique in the cluster (n1, n2, n3...).")],
    store: Annotated[Path, typer.Option("--store", help="JetStream directory on this node's disk.")],
    route: Annotated[list[str], typer.Option("--route", help="nats-route://host:port of another node (repeat).")],
    gateway_password: Annotated[str, typer.Option("--gateway-password", envvar="SQAL_ENGINE_GATEWAY_PASSWORD",
                                                  help="Password of the gateway's user sqal-gateway.")],
    device_password: Annotated[str, typer.Option("--device-password", envvar="SQAL_ENGINE_DEVICE_PASSWORD",
                                                 help="Password of the boards' shared user sqal-device (without "
                                                 "per-device identities, docs/security.md).")],
    client_port: Annotated[int, typer.Option("--client-port")] = 4222,
    mqtt_port: Annotated[int, typer.Option("--mqtt-port")] = 1883,
    route_port: Annotated[int, typer.Option("--route-port")] = 6222,
    replicas: Annotated[int, typer.Option("--replicas", min=1, max=5, help="Replicas of the engine's MQTT "
                                          "session streams: the cluster's size up to 3 (or 5).")] = 3,
) -> None:
    """Print a node's nats-server configuration: JetStream on disk, MQTT for the boards, routes."""
    cfg = NodeConfig(name=name, store_dir=store, client_port=client_port, mqtt_port=mqtt_port, route_port=route_port,
                     routes=list(route), gateway_password=gateway_password, device_password=device_password,
                     mqtt_stream_replicas=replicas)
    typer.echo(cfg.render(), nl=False)
