"""What a reload may change, and the environment each generation is forked with."""

from __future__ import annotations

import os

from gshard.addresses import BindAddress
from gshard.config import Config
from gshard.manager import process_env, reconfigure
from gshard.manager.events import Timings


def config(**values) -> Config:
    return Config.from_values({"app": "hello:app", "shards": 2, **values})


def test_a_reload_keeps_what_only_a_new_manager_can_change_and_names_it():
    running = config(bind=["127.0.0.1:8000"], pidfile="/run/a.pid", timeout=30)
    read = config(bind=["0.0.0.0:9000"], pidfile="/run/b.pid", timeout=60, shards=4,
                  preload_app=True)
    kept, changed = reconfigure.keep_fixed(running, read)
    assert changed == ["bind", "pidfile", "preload_app"]
    assert (kept.bind, kept.pidfile, kept.preload_app) == (
        (BindAddress("127.0.0.1", 8000),), "/run/a.pid", False)
    assert (kept.timeout, kept.shards) == (60.0, 4)  # the rest is what was read
    message = reconfigure.kept_message(changed)
    assert message.startswith("Reload keeps the value gshard started with for bind (the "
                              "listeners are the manager's); pidfile (")
    assert reconfigure.keep_fixed(running, running) == (running, [])


def test_timings_come_from_the_settings_gunicorn_names():
    assert reconfigure.timings_of(config(boot_timeout=5, timeout=7, graceful_timeout=9)) == (
        Timings(boot_timeout=5.0, heartbeat_timeout=7.0, graceful_timeout=9.0))


def test_raw_env_read_again_starts_from_the_environment_gshard_started_with(monkeypatch):
    monkeypatch.setenv("GSHARD_TEST_KEPT", "as started")
    monkeypatch.delenv("GSHARD_TEST_ADDED", raising=False)
    monkeypatch.delenv("GSHARD_TEST_OTHER", raising=False)
    try:
        process_env.apply(config(raw_env=["GSHARD_TEST_KEPT=first", "GSHARD_TEST_ADDED=x"]))
        assert os.environ["GSHARD_TEST_KEPT"] == "first"
        assert os.environ["GSHARD_TEST_ADDED"] == "x"
        process_env.apply(config(raw_env=["GSHARD_TEST_OTHER=y"]))
        assert os.environ["GSHARD_TEST_KEPT"] == "as started"
        assert "GSHARD_TEST_ADDED" not in os.environ
        assert os.environ["GSHARD_TEST_OTHER"] == "y"
    finally:
        process_env.apply(config())
    assert "GSHARD_TEST_OTHER" not in os.environ
