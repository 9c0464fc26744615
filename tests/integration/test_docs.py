"""The documentation site: it builds strictly, its references are complete, its
examples run as shown, and it renders in a real browser with its search working.

The build is MkDocs with Material (``pip install -e '.[docs]'``, which the
test extra includes); the browser is Debian's headless Chromium driven by
its ChromeDriver through Selenium (``.ci/run`` installs both).
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gshard.config import BOOKKEEPING, settings
from tests.support.docblocks import DATA, RUNNABLE, Block, indented_code, read_blocks, sessions
from tests.support.paths import REPO
from tests.support.processes import kill_group, launch_command

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
VENV_BIN = str(Path(sys.executable).parent)
BLOCK_TIMEOUT = 60


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for the module with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout + built.stderr
    return out


@pytest.mark.timeout(200)
def test_the_site_builds_strictly_and_fetches_nothing(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) >= len(PAGES)
    for page in pages:
        text = page.read_text()
        external = re.findall(r'(?:src|href)="(https?://[^"]+)"', text)
        # Links a reader may follow are fine; nothing the page loads may be remote.
        loaded = re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not loaded, f"{page.relative_to(site)} loads {loaded}"
        assert "fonts.googleapis" not in text and all("fonts.g" not in url for url in external)


@pytest.mark.timeout(200)
def test_each_page_has_one_title_and_included_results_stay_out_of_its_contents(site):
    for page in site.rglob("index.html"):
        text = page.read_text()
        if 'class="md-content"' not in text:
            continue  # the search page and other theme pages
        assert text.count("<h1") == 1, f"{page.relative_to(site)} has {text.count('<h1')} titles"
    performance = (site / "performance" / "index.html").read_text()
    assert "gshard against gshard-before" in performance  # the committed results are there
    assert 'id="gshard-against-gshard-before"' not in performance  # but not as a heading


@pytest.mark.timeout(200)
def test_every_setting_is_in_the_reference(site):
    reference = html.unescape((site / "settings" / "index.html").read_text())
    for spec in settings():
        if spec.name in BOOKKEEPING:
            continue
        assert f'id="{spec.name}"' in reference or \
            f"<code>{spec.name}</code></h3>" in reference, f"{spec.name} is not in the reference"
        for flag in spec.metadata["flags"]:
            assert f"<code>{flag}</code>" in reference, f"{flag} is not in the reference"


@pytest.mark.timeout(200)
def test_every_gunicorn_setting_is_on_the_gunicorn_page(site):
    from gunicorn.config import KNOWN_SETTINGS

    page = html.unescape((site / "gunicorn" / "index.html").read_text())
    rows = re.findall(r"<tr>\s*<td><code>([a-z0-9_]+)</code></td>", page)
    assert sorted(rows) == sorted(setting.name for setting in KNOWN_SETTINGS)


@pytest.mark.timeout(200)
def test_every_metric_is_on_the_observing_page(site):
    from gshard.manager.fsm import ManagerFSM
    from gshard.manager.observe.prometheus import GshardCollector
    from gshard.manager.observe.registry import Registry
    from gshard.manager.observe.status import ManagerInfo, View

    info = ManagerInfo(pid=1, started=0.0, started_wall=0.0, app="a:b", urls=())
    view = View(info, ManagerFSM(slots=1).view(), Registry(), {}, 0.0, 0.0)
    page = html.unescape((site / "observing" / "index.html").read_text())
    names = [family.name for family in GshardCollector(lambda: view).collect()]
    assert len(names) > 10
    for name in names:
        assert name in page, f"metric {name} is not documented"


# --- the examples ------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_block_is_fenced_and_says_what_it_is(page):
    assert not indented_code(page), (
        f"{page.name}: indented code at lines {indented_code(page)}; fence it and give it a "
        "language (sh/python to be run, {.sh .illustrative} to be shown only, text...)")
    for block in read_blocks(page):
        assert block.language in (*RUNNABLE, *DATA), \
            f"{block.where}: a block in {block.language or 'no language'}"


def _runnable_sessions() -> list:
    params = []
    for page in PAGES:
        for session in sessions(read_blocks(page)):
            first = session.server or session.clients[0]
            params.append(pytest.param(session, id=first.where))
    return params


@pytest.mark.timeout(120)
@pytest.mark.parametrize("session", _runnable_sessions())
def test_the_example_runs_as_the_page_shows(session, tmp_path):
    workdir = _workdir(tmp_path)
    if session.server is None:
        for block in session.clients:
            _run(block, workdir, port=None)
        return
    with _serving(session.server, workdir) as port:
        for block in session.clients:
            _run(block, workdir, port)


def _workdir(tmp_path: Path) -> Path:
    """Where a page's commands run: a copy of the repository's examples, as in a checkout."""
    shutil.copytree(REPO / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _environment() -> dict[str, str]:
    return {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}


def _command(block: Block, text: str) -> list[str]:
    if block.language == "python":
        return [sys.executable, "-c", text]
    return ["bash", "-euo", "pipefail", "-c", text]


@contextlib.contextmanager
def _serving(block: Block, workdir: Path) -> Iterator[int]:
    """Run a ``terminal 1`` block on a port the kernel picks; yield the port; stop it."""
    text = block.text.replace("127.0.0.1:8000", "127.0.0.1:0")
    server = launch_command(_command(block, text), cwd=workdir, env=_environment())
    try:
        server.wait_ready()
        yield server.port
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, f"{block.where}: the server did not stop cleanly\n" \
            + server.stderr.text
    finally:
        kill_group(server)


def _run(block: Block, workdir: Path, port: int | None) -> None:
    text = block.text if port is None else block.text.replace("127.0.0.1:8000",
                                                              f"127.0.0.1:{port}")
    done = subprocess.run(_command(block, text), cwd=workdir, env=_environment(),
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    printed = done.stdout + done.stderr
    if port is not None:
        printed = printed.replace(f"127.0.0.1:{port}", "127.0.0.1:8000")
    assert done.returncode == 0, f"{block.where} failed ({done.returncode}):\n{printed}"
    for line in (block.output or "").splitlines():
        if line.strip():
            assert line.strip() in printed, f"{block.where}: {line!r} not printed:\n{printed}"


# --- looked at, not only built -----------------------------------------------------------


@pytest.fixture(scope="module")
def served_site(site) -> Iterator[str]:
    """The built site over HTTP on a loopback port, as a browser reads it."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven through ChromeDriver, with its console kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed (.ci/run " \
        "installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_page_load_timeout(30)
    yield session
    session.quit()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", ["", "settings/", "deploying/"])
def test_the_page_renders_in_a_browser_without_console_errors(browser, served_site, path):
    browser.get(f"{served_site}/{path}")
    assert browser.find_element("css selector", "article h1").text.strip()
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


@pytest.mark.timeout(120)
def test_the_search_box_finds_a_setting_by_name(browser, served_site):
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{served_site}/")
    browser.find_element("css selector", "label.md-search__icon, .md-search__button, "
                         "label[for='__search']").click()
    box = browser.find_element("css selector", "input.md-search__input")
    box.send_keys("graceful_timeout")
    WebDriverWait(browser, 20).until(expected_conditions.text_to_be_present_in_element(
        ("css selector", ".md-search-result"), "graceful_timeout"))
    results = browser.find_element("css selector", ".md-search-result").text
    assert "graceful_timeout" in results
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
