"""SDP for WHIP/WHEP: parse offers, negotiate codecs and extensions, build answers."""

from relaycast.sdp.answer import (
    LocalTransport,
    SendSsrcs,
    build_answer,
    build_sdpfrag,
    candidate_priority,
)
from relaycast.sdp.codecs import (
    AUDIO_CODECS,
    VIDEO_CODECS,
    codec_key,
    describe,
    h264_profile,
    is_supported,
)
from relaycast.sdp.model import Codec, MediaSection, SessionDescription
from relaycast.sdp.negotiate import (
    PLAY_EXTENSIONS,
    PUBLISH_EXTENSIONS,
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_PLAYOUT_DELAY,
    URI_SDES_MID,
    URI_TRANSPORT_CC,
    URI_VIDEO_ORIENTATION,
    Negotiated,
    NegotiatedMedia,
    NegotiationError,
    negotiate_play,
    negotiate_publish,
)
from relaycast.sdp.parse import MAX_SDP_BYTES, SdpError, parse_sdp, parse_sdpfrag
from relaycast.sdp.simulcast import URI_REPAIRED_RID, URI_RID

__all__ = [
    "AUDIO_CODECS",
    "MAX_SDP_BYTES",
    "PLAY_EXTENSIONS",
    "PUBLISH_EXTENSIONS",
    "URI_ABS_SEND_TIME",
    "URI_AUDIO_LEVEL",
    "URI_PLAYOUT_DELAY",
    "URI_REPAIRED_RID",
    "URI_RID",
    "URI_SDES_MID",
    "URI_TRANSPORT_CC",
    "URI_VIDEO_ORIENTATION",
    "VIDEO_CODECS",
    "Codec",
    "LocalTransport",
    "MediaSection",
    "Negotiated",
    "NegotiatedMedia",
    "NegotiationError",
    "SdpError",
    "SendSsrcs",
    "SessionDescription",
    "build_answer",
    "build_sdpfrag",
    "candidate_priority",
    "codec_key",
    "describe",
    "h264_profile",
    "is_supported",
    "negotiate_play",
    "negotiate_publish",
    "parse_sdp",
    "parse_sdpfrag",
]
