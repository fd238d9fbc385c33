"""Pure parts of relaycast.workers: who owns a session id or ufrag, the workers setting, the
merge of several workers' Prometheus expositions."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycast.config import MAX_WORKERS, ConfigError, load_config
from relaycast.net.ice_lite import ICE_CHARS, IceLite
from relaycast.workers.api import merge_expositions
from relaycast.workers.plan import WorkerPlan, session_owner, ufrag_owner
from relaycast.workers.worker import worker_config


def test_session_ids_and_ufrags_name_their_worker() -> None:
    for index in (0, 1, 9, 10, MAX_WORKERS - 1):
        plan = WorkerPlan(index, MAX_WORKERS, Path("/nonexistent"), "s")
        assert session_owner(plan.session_prefix + "AbC-_x", MAX_WORKERS) == index
        ice = IceLite()
        ice.ufrag_prefix = plan.ufrag_prefix
        ufrag = ice.new_ufrag()
        assert len(ufrag) == 8 and all(c in ICE_CHARS for c in ufrag)
        assert ufrag_owner(ufrag, MAX_WORKERS) == index
    assert session_owner("2.abc", 2) is None  # no such worker
    assert session_owner("abc", 2) is None  # a single process's id
    assert session_owner("x.abc", 2) is None
    assert session_owner("001.abc", 2) is None
    assert ufrag_owner("", 2) is None
    assert ufrag_owner("c0000000", 2) is None  # index 2 of 2 workers
    assert ufrag_owner("é", 2) is None


def test_workers_setting_from_flag_env_and_toml(tmp_path: Path) -> None:
    assert load_config({"workers": 3}, env={}).worker_count == 3
    assert load_config({}, env={"RELAYCAST_WORKERS": "2"}).workers == 2
    toml = tmp_path / "r.toml"
    toml.write_text("workers = 4\n")
    assert load_config({}, env={}, toml_path=str(toml)).workers == 4
    assert 1 <= load_config({}, env={}).worker_count <= MAX_WORKERS  # one per core
    for bad in (0, MAX_WORKERS + 1, -1):
        with pytest.raises(ConfigError, match="workers"):
            load_config({"workers": bad}, env={})


def test_server_wide_caps_are_divided_among_workers() -> None:
    config = load_config({"max_sessions": 101, "max_viewers_per_stream": 10}, env={})
    split = worker_config(config, 4)
    assert (split.max_sessions, split.max_viewers_per_stream) == (26, 3)
    assert split.max_sessions_per_ip == config.max_sessions_per_ip  # per address: as set


def test_expositions_merged_with_a_worker_label() -> None:
    first = (
        "# HELP relaycast_x_total X.\n# TYPE relaycast_x_total counter\n"
        'relaycast_x_total 3.0\n# TYPE relaycast_y gauge\nrelaycast_y{stream="live"} 1.0\n'
    )
    second = (
        "# HELP relaycast_x_total X.\n# TYPE relaycast_x_total counter\nrelaycast_x_total 4.0\n"
    )
    merged = merge_expositions([(0, first), (1, second)]).splitlines()
    assert merged == [
        "# HELP relaycast_x_total X.",
        "# TYPE relaycast_x_total counter",
        'relaycast_x_total{worker="0"} 3.0',
        'relaycast_x_total{worker="1"} 4.0',  # a family's samples stay together
        "# TYPE relaycast_y gauge",
        'relaycast_y{worker="0",stream="live"} 1.0',
    ]
