"""Authentication of cluster traffic with the shared cluster secret.

A node pulling a stream from another node signs its WHEP ``POST`` (HMAC-SHA256 keyed with
``--cluster-secret``) over the method, the path, its own node URL, a Unix time and the SHA-256
of the body (the SDP offer). The body hash binds the signature to the offer, whose DTLS
fingerprint only the signing node can answer to: a request captured on the way and replayed
within the clock window gets a session nobody else can complete. The receiving node accepts a
signature at most :data:`MAX_SKEW` seconds away from its clock.

The registry records (Redis) are signed the same way, so that a client of Redis that does not
know the secret cannot point edges at a node of its own choosing (:mod:`.registry`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = [
    "HEADER_AUTH",
    "HEADER_NODE",
    "MAX_SKEW",
    "NodeAuthError",
    "node_headers",
    "sign_record",
    "verify_node",
    "verify_record",
]

#: the pulling node's URL (``--node-url``)
HEADER_NODE = "Relaycast-Node"
#: ``<unix seconds>:<hex HMAC-SHA256>``
HEADER_AUTH = "Relaycast-Node-Auth"
#: seconds a signature is accepted before or after the receiver's clock
MAX_SKEW = 60


class NodeAuthError(Exception):
    """A request that claims to come from a node and cannot prove it; ``status`` is 401
    (no or malformed proof) or 403 (a proof that does not match this cluster's secret)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _mac(secret: str, *parts: str) -> str:
    message = "\n".join(parts).encode("utf-8", "surrogatepass")
    return hmac.new(secret.encode("utf-8", "surrogatepass"), message, hashlib.sha256).hexdigest()


def node_headers(
    secret: str, method: str, path: str, node_url: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The headers a node adds to a request it makes as a node of the cluster."""
    stamp = str(int(time.time() if now is None else now))
    digest = hashlib.sha256(body).hexdigest()
    mac = _mac(secret, "node-request", method.upper(), path, node_url, stamp, digest)
    return {HEADER_NODE: node_url, HEADER_AUTH: f"{stamp}:{mac}"}


def verify_node(
    secret: str | None,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> str | None:
    """The node URL a request proves it comes from; None when it does not claim to be a node.

    Raises :class:`NodeAuthError`: 401 for a claim without a usable proof, 403 for a proof
    that fails (wrong secret, too old, another body) or when this node has no secret (it then
    takes no node requests at all).
    """
    node = headers.get(HEADER_NODE)
    proof = headers.get(HEADER_AUTH)
    if node is None and proof is None:
        return None
    if not node or not proof:
        raise NodeAuthError(
            401, f"a node request needs both {HEADER_NODE} and {HEADER_AUTH} headers"
        )
    stamp, sep, mac = proof.partition(":")
    if not sep or not stamp.isdigit() or len(mac) != 64:
        raise NodeAuthError(401, f"{HEADER_AUTH} must be '<unix seconds>:<hex HMAC-SHA256>'")
    if secret is None:
        raise NodeAuthError(
            403, "this node has no --cluster-secret, so it accepts no requests as a node"
        )
    clock = time.time() if now is None else now
    digest = hashlib.sha256(body).hexdigest()
    expected = _mac(secret, "node-request", method.upper(), path, node, stamp, digest)
    if not hmac.compare_digest(expected, mac.lower()):
        raise NodeAuthError(403, "the node signature does not match this cluster's secret")
    if abs(clock - int(stamp)) > MAX_SKEW:
        raise NodeAuthError(
            403, f"the node signature is more than {MAX_SKEW} s away from this node's clock"
        )
    return node


def sign_record(secret: str | None, kind: str, *fields: str) -> str:
    """The signature a registry record of ``kind`` carries ('' without a secret)."""
    if secret is None:
        return ""
    return _mac(secret, "registry", kind, *fields)


def verify_record(secret: str | None, signature: object, kind: str, *fields: str) -> bool:
    """True when a registry record's signature is good (always, without a secret)."""
    if secret is None:
        return True
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign_record(secret, kind, *fields), signature)
