"""Recording broadcasts to WebM / fragmented MP4 without transcoding (see recorder.py)."""

from relaycast.media.recording.recorder import Recorder, Recording, RecordingTap, list_recordings

__all__ = ["Recorder", "Recording", "RecordingTap", "list_recordings"]
