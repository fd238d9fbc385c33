"""The HTTP side of the cluster: ``GET /api/cluster`` and WHEP requests made by other nodes.

A WHEP ``POST`` carrying the node headers (:mod:`.auth`) is a pull by another node: it must
prove the cluster secret (401 without a usable proof, 403 with a wrong one), and is then exempt
from the per-address limits (rate, sessions per address) and from viewer tokens of private
streams; the server's total and per-stream limits still apply. A node only serves what it has:
a stream published or pulled here (409 otherwise, so the asking node looks its origin up again).
A node's pull of a simulcast stream gets the top layer sent, whatever its bandwidth estimate
(``LayerSelector.follow_top``): it serves viewers of every bandwidth from that one copy.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from relaycast.cluster.auth import HEADER_AUTH, HEADER_NODE, NodeAuthError, verify_node
from relaycast.cluster.node import ClusterNode
from relaycast.http.problems import ProblemError
from relaycast.http.signalling import MAX_SDP_BYTES, SDP, created, media_server
from relaycast.http.tokens import visible_streams
from relaycast.sdp import NegotiationError, SdpError, parse_sdp

__all__ = ["CLUSTER_KEY", "add_cluster_routes", "is_node_request", "node_play"]

CLUSTER_KEY = web.AppKey("cluster", ClusterNode)


def is_node_request(request: web.Request) -> bool:
    """The request claims to come from another node of the cluster."""
    return HEADER_NODE in request.headers or HEADER_AUTH in request.headers


async def node_play(request: web.Request, cluster: ClusterNode, stream: str) -> web.Response:
    """``POST /whep/{stream}`` by another node (see the module docstring)."""
    if request.content_type != SDP:
        raise ProblemError(415, "Unsupported Media Type", f"send the offer as {SDP}")
    body = await request.content.read(MAX_SDP_BYTES + 1)
    while len(body) <= MAX_SDP_BYTES:
        chunk = await request.content.read(MAX_SDP_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > MAX_SDP_BYTES:
        raise ProblemError(
            413, "Content Too Large", f"the body is limited to {MAX_SDP_BYTES} bytes"
        )
    try:
        node = verify_node(cluster.secret, "POST", request.path, request.headers, body)
    except NodeAuthError as exc:
        headers = {"WWW-Authenticate": 'Relaycast-Node realm="relaycast"'}
        raise ProblemError(
            exc.status, "Node authentication failed", exc.detail, headers=headers
        ) from None
    assert node is not None
    server = media_server(request)
    local = server.streams.get(stream)
    if local is None or (local.publisher is None and local.pull is None):
        raise ProblemError(
            409,
            "Not a source of this stream",
            f"{cluster.node_url} neither publishes nor pulls {stream!r} now; look its origin up "
            "again",
            headers={"Retry-After": "1"},
        )
    config = server.config
    if len(server.sessions) >= config.max_sessions:
        raise ProblemError(
            503,
            "Server Full",
            "this node holds --max-sessions sessions",
            headers={"Retry-After": "5"},
        )
    if len(local.subscribers) >= config.max_viewers_per_stream:
        raise ProblemError(
            503, "Stream Full", f"{stream!r} has --max-viewers-per-stream viewers here",
            headers={"Retry-After": "5"},
        )  # fmt: skip
    try:
        offer = parse_sdp(body.decode("utf-8"))
    except (UnicodeDecodeError, SdpError) as exc:
        raise ProblemError(400, "Malformed SDP", str(exc)) from exc
    try:
        subscriber = server.play(stream, offer)
    except NegotiationError as exc:
        raise ProblemError(exc.status, "Cannot play this stream here", str(exc)) from exc
    subscriber.layers.follow_top()  # a node is not a bandwidth-limited viewer
    subscriber.select_layer(time.monotonic())
    cluster.node_session(subscriber.id, node)
    return created(request, subscriber, f"/whep/{stream}/{subscriber.id}")


async def get_cluster(request: web.Request) -> web.Response:
    """``GET /api/cluster``: ``{"enabled": false}`` on a single node; else the nodes (URL,
    streams, viewers, load) and this node's pulls. Private streams are left out unless the
    request carries their publish key."""
    cluster = request.app.get(CLUSTER_KEY)
    if cluster is None:
        return web.json_response({"enabled": False, "nodes": [], "pulls": []})
    server = media_server(request)
    names: set[str] = set(server.streams)
    for node in cluster.nodes:
        names.update(node.streams)
    visible = visible_streams(request, server.config, sorted(names))
    data: dict[str, Any] = cluster.describe(visible)
    return web.json_response(data)


def add_cluster_routes(app: web.Application) -> None:
    app.router.add_get("/api/cluster", get_cluster)
