"""The --reload watcher: which files it reports and when it says they changed."""

from __future__ import annotations

import importlib
import json
import os
import sys

from gshard.manager.watcher import Watcher
from gshard.shard.sources import application_sources


def _touch(path, stamp: float) -> None:
    os.utime(path, (stamp, stamp))


def test_a_changed_source_is_reported_once_at_the_next_check(tmp_path):
    source = tmp_path / "app.py"
    source.write_text("x = 1\n")
    _touch(source, 1000)
    watcher = Watcher(())
    watcher.add([str(source)])
    assert watcher.changed(0.0) == []
    _touch(source, 2000)
    assert watcher.changed(0.5) == []  # not before the poll interval
    assert watcher.changed(1.0) == [str(source)]
    assert watcher.changed(2.0) == []


def test_extra_file_globs_cover_files_created_later_and_removed(tmp_path):
    first = tmp_path / "a.html"
    first.write_text("a")
    watcher = Watcher([str(tmp_path / "*.html")])
    assert watcher.changed(0.0) == []
    (tmp_path / "b.html").write_text("b")
    assert watcher.changed(1.0) == []  # a new match is watched from now on
    first.unlink()
    assert watcher.changed(2.0) == [str(first)]


def test_application_sources_exclude_the_standard_library_and_packages(tmp_path, monkeypatch):
    (tmp_path / "my_watched_app.py").write_text("import json\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("my_watched_app")
    try:
        sources = application_sources()
    finally:
        del sys.modules["my_watched_app"]
    assert str(tmp_path / "my_watched_app.py") in sources
    assert os.path.realpath(json.__file__) not in sources
    assert not [s for s in sources if "site-packages" in s or "/gshard/" in s]
