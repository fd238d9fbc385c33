"""The recording settings: --record-dir / RELAYCAST_RECORD_DIR / record_dir, and per stream
``[streams.NAME] record = true/false``."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycast.config import ConfigError, load_config
from relaycast.media.recording.recorder import check_record_dir, list_recordings, utc_name


def test_record_dir_from_flag_env_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f'record_dir = "{tmp_path / "t"}"\n')
    assert load_config({}, env={}, toml_path=str(toml)).record_dir == str(tmp_path / "t")
    env = {"RELAYCAST_RECORD_DIR": "/srv/env"}
    assert load_config({}, env=env, toml_path=str(toml)).record_dir == "/srv/env"
    flags = {"record_dir": "/srv/flag"}
    assert load_config(flags, env=env, toml_path=str(toml)).record_dir == "/srv/flag"
    assert load_config({}, env={}).record_dir is None
    assert not load_config({}, env={}).records("live")


def test_per_stream_record_tables(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        'record_dir = "/srv/rec"\n[streams.quiet]\nrecord = false\n[streams.live]\nrecord = true\n'
    )
    config = load_config({}, env={}, toml_path=str(toml))
    assert config.records("live") and config.records("anything") and not config.records("quiet")


def test_record_true_without_a_directory_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[streams.live]\nrecord = true\n")
    with pytest.raises(ConfigError, match=r"record = true needs record_dir"):
        load_config({}, env={}, toml_path=str(toml))
    toml.write_text('[streams.live]\nrecord = "maybe"\n')
    with pytest.raises(ConfigError, match="record"):
        load_config({}, env={}, toml_path=str(toml))


def test_record_dir_must_be_writable(tmp_path: Path) -> None:
    check_record_dir(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot be created"):
        check_record_dir(blocker / "sub")


def test_listing_reads_the_sidecar(tmp_path: Path) -> None:
    assert utc_name(1_796_058_300.0) == "2026-11-30T17-05-00Z"
    stream = tmp_path / "live"
    stream.mkdir()
    (stream / "2026-11-30T17-05-00Z.webm").write_bytes(b"x" * 10)
    (stream / "2026-11-30T17-05-00Z.webm.json").write_text(
        '{"start": 1796058300.0, "duration": 12.5, "complete": true, '
        '"codecs": {"video": "vp8", "audio": "opus"}}'
    )
    (stream / "2026-11-30T18-00-00Z.mp4").write_bytes(b"y")  # no sidecar (yet)
    (stream / "notes.txt").write_text("ignored")
    assert list_recordings(tmp_path) == [
        {
            "stream": "live",
            "path": "live/2026-11-30T17-05-00Z.webm",
            "size": 10,
            "start": "2026-11-30T17:05:00+00:00",
            "duration": 12.5,
            "complete": True,
            "codecs": {"video": "vp8", "audio": "opus"},
        },
        {
            "stream": "live",
            "path": "live/2026-11-30T18-00-00Z.mp4",
            "size": 1,
            "start": None,
            "duration": None,
            "complete": False,
            "codecs": {},
        },
    ]
    assert list_recordings(tmp_path / "missing") == []
