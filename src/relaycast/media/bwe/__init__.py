"""Per-viewer bandwidth estimation in the manner of Google Congestion Control
(draft-ietf-rmcat-gcc-02), send side, from transport-wide feedback; docs/bwe.md explains it.

:class:`BandwidthEstimator` is pure and clock-injected (one per viewer Subscriber, its ``bwe``):
``estimate_bps``, ``on_transport_feedback``, ``on_receiver_report``, ``on_remb``, ``probe``.
:class:`TransportFeedbackAdapter` joins the viewer's feedback with what we sent
(:mod:`relaycast.media.bwe.history`: the transport-wide sequence numbers we stamp and their send
times, in C when the native kernel is built).
"""

from relaycast.media.bwe.estimator import BandwidthEstimator, SentPacket
from relaycast.media.bwe.probe import ProbeResult

__all__ = ["BandwidthEstimator", "ProbeResult", "SentPacket"]
