"""gunicorn's hooks as gshard calls them: the objects they get, and what a failure means.

The request hooks run through a real ``Connection`` over a gevent socket
pair in this process, so ``req`` and ``resp`` are built from real exchanges.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator

import gevent
import pytest
from gevent import socket as gsocket

from gshard import hooks
from gshard.addresses import BindAddress
from gshard.config import Config
from gshard.http.connection import Connection
from gshard.http.context import Lifecycle, ServeContext
from gshard.http.protocol import Limits
from gshard.http.wsgi import base_environ
from gshard.shard import request_hooks
from gshard.sockets.listener import ListenerSet
from tests.support.rawhttp import Conn, request_bytes

pytestmark = pytest.mark.timeout(10)


def make_config(**values) -> Config:
    return Config.from_values({"app": "hello:app", "shards": 3, **values})


def make_server(config: Config, count: int = 3) -> hooks.Server:
    listeners = [ListenerSet(BindAddress("127.0.0.1", 0), 8123, []),
                 ListenerSet(BindAddress(unix_path="/tmp/x.sock"), 0, [])]
    return hooks.Server(config, 4242, [ls.hook_address for ls in listeners], lambda: count)


# --- call: what a failure means ---------------------------------------------------


def test_an_undefined_hook_is_not_called_and_gives_none():
    assert hooks.call(make_config(), "on_starting", object()) is None


def test_a_defined_hook_gets_its_arguments_and_its_result_is_returned():
    seen = []

    def on_starting(server):
        seen.append(server)
        return "done"

    assert hooks.call(make_config(on_starting=on_starting), "on_starting", "S") == "done"
    assert seen == ["S"]


def test_a_raising_hook_is_logged_with_its_traceback_and_the_caller_goes_on(caplog):
    def when_ready(server):
        raise RuntimeError("the metrics port is taken")

    with caplog.at_level(logging.ERROR, logger="gunicorn.error"):
        assert hooks.call(make_config(when_ready=when_ready), "when_ready", None) is None
    assert "Exception in the when_ready hook" in caplog.text
    assert "Traceback" in caplog.text and "the metrics port is taken" in caplog.text


@pytest.mark.parametrize("name", sorted(hooks.BOOT_HOOKS))
def test_a_raising_boot_hook_fails_the_boot_with_its_traceback(name):
    def broken(*args):
        raise ValueError("no database")

    # The arity check reads the signature: give each hook its own.
    arity = {"post_fork": 2, "post_worker_init": 1, "ssl_context": 2}[name]
    hook = {1: lambda a: broken(), 2: lambda a, b: broken()}[arity]
    with pytest.raises(hooks.HookFailed) as failure:
        hooks.call(make_config(**{name: hook}), name, *range(arity))
    message = str(failure.value)
    assert message.startswith(f"The {name} hook raised:")
    assert "Traceback" in message and "ValueError: no database" in message


def test_ssl_context_hook_gets_cfg_and_the_default_factory():
    def ssl_context(config, default_ssl_context_factory):
        return ("wrapped", config.workers, default_ssl_context_factory())

    config = make_config(ssl_context=ssl_context)
    assert hooks.ssl_context(config, lambda: "default") == ("wrapped", 3, "default")
    assert hooks.ssl_context(make_config(), lambda: "default") == "default"


def test_ssl_context_hook_returning_nothing_fails_the_boot():
    config = make_config(ssl_context=lambda config, factory: None)
    with pytest.raises(hooks.HookFailed, match="returned None"):
        hooks.ssl_context(config, lambda: "default")


# --- server, worker and cfg -----------------------------------------------------------


def test_cfg_reads_gunicorn_names_gshard_names_and_gunicorn_only_settings():
    config = make_config(timeout=7, threads=4)
    cfg = hooks.ConfigView(config)
    assert (cfg.workers, cfg.shards, cfg.timeout) == (3, 3, 7)
    assert cfg.threads == 4  # accepted with a warning, readable as given
    assert cfg.is_ssl is False
    assert [str(address) for address in cfg.bind] == ["127.0.0.1:8000"]
    with pytest.raises(AttributeError):
        cfg.no_such_setting  # noqa: B018
    assert copy.copy(cfg).workers == 3  # copying finds no setting where there is none


def test_server_carries_gunicorn_arbiter_attributes():
    count = [3]
    config = make_config(timeout=10)
    listener = ListenerSet(BindAddress("0.0.0.0", 0), 8123, [])
    server = hooks.Server(config, 4242, [listener.hook_address], lambda: count[0])
    assert (server.pid, server.timeout, server.cfg.workers) == (4242, 10, 3)
    assert server.address == [("0.0.0.0", 8123)]
    assert server.num_workers == 3
    count[0] = 5
    assert server.num_workers == 5  # the manager's count as it is now
    assert server.log.error_log is logging.getLogger("gunicorn.error")
    assert callable(server.log.info) and callable(server.log.exception)


def test_a_fork_makes_a_worker_pre_fork_sees_it_booting_and_child_exit_sees_it_reaped():
    seen = []
    config = make_config(
        pre_fork=lambda server, worker: seen.append(("pre_fork", worker.age, worker.pid)),
        child_exit=lambda server, worker: seen.append(("child_exit", worker.pid)),
    )
    server = make_server(config)
    workers = server.WORKERS  # gunicorn's name for the arbiter's {pid: worker}
    first = server.forking(slot=0, generation=1, config=config)
    server.forked(first, 1001)
    second = server.forking(slot=1, generation=1, config=config)
    server.forked(second, 1002)
    assert (first.age, first.ppid, first.slot, first.generation) == (1, 4242, 0, 1)
    assert second.age == 2
    assert workers == {1001: first, 1002: second}
    server.reaped(1001)
    server.reaped(999)  # not a shard: nothing to say
    assert seen == [("pre_fork", 1, "[booting]"), ("pre_fork", 2, "[booting]"),
                    ("child_exit", 1001)]
    assert workers == {1002: second}
    assert (str(second), second.cfg.workers, second.log is server.log) == (
        "<Worker 1002>", 3, True)
    assert (second.alive, second.booted, second.aborted, second.timeout) == (
        True, False, False, config.timeout / 2)


# --- per-request hooks, through a real connection --------------------------------------


def hello(environ, start_response):
    body = b"hello " + environ["PATH_INFO"].encode()
    start_response("201 Created", [("Content-Type", "text/plain"),
                                   ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def serve() -> Iterator:
    made = []

    def make(config: Config, app=hello) -> Conn:
        worker = make_server(config).forking(0, 1, config)
        starting, finished = request_hooks.request_hooks(config, worker)
        ctx = ServeContext(
            app=app, base_environ=base_environ("localhost", "80", "http", False),
            limits=Limits(), keepalive=2.0, header_timeout=2.0, body_timeout=2.0,
            lifecycle=Lifecycle(), starting=starting, finished=finished,
        )
        server_end, client_end = gsocket.socketpair()
        greenlet = gevent.spawn(Connection(server_end, ("10.0.0.7", "5555"), ctx).serve)
        client = Conn(client_end, timeout=3.0)
        made.append((client, greenlet))
        return client

    yield make
    for client, greenlet in made:
        client.close()
        greenlet.kill()


def test_no_request_hooks_means_empty_tuples():
    worker = make_server(config := make_config()).forking(0, 1, config)
    assert request_hooks.request_hooks(make_config(), worker) == ((), ())


def test_pre_and_post_request_get_gunicorn_shaped_req_and_resp(serve):
    calls = []

    def pre_request(worker, req):
        req.started_by_hook = True  # hooks keep their own state on req, as in gunicorn
        calls.append(("pre", worker, req))

    def post_request(worker, req, environ, resp):
        calls.append(("post", worker, req, environ, resp))

    client = serve(make_config(pre_request=pre_request, post_request=post_request))
    client.send(request_bytes("GET", "/a/b?x=1&y=2", headers=(("X-Trace", "abc"),)))
    response = client.read_response()
    assert (response.status, response.body) == (201, b"hello /a/b")

    (_, worker, req), (_, post_worker, post_req, environ, resp) = calls
    assert worker is post_worker and worker.age == 1
    assert post_req is req and req.started_by_hook
    assert (req.method, req.uri, req.path, req.query, req.version) == (
        "GET", "/a/b?x=1&y=2", "/a/b", "x=1&y=2", (1, 1))
    assert req.headers == [("HOST", "test"), ("X-TRACE", "abc")]
    assert (req.scheme, req.remote_addr, req.should_close()) == (
        "http", ("10.0.0.7", 5555), False)
    assert environ["PATH_INFO"] == "/a/b"
    assert (resp.status, resp.status_code, resp.sent, resp.response_length) == (
        "201 Created", 201, 10, 10)
    assert ("Content-Type", "text/plain") in resp.headers and resp.headers_sent


def test_post_request_alone_still_gets_a_req(serve):
    seen = []
    client = serve(make_config(post_request=lambda worker, req, environ, resp: seen.append(
        (req.method, req.path, resp.status_code))))
    client.send(request_bytes("POST", "/p", body=b"data"))
    assert client.read_response().status == 201
    assert seen == [("POST", "/p", 201)]


def test_gunicorns_two_argument_post_request_works(serve):
    seen = []

    def post_request(worker, req):
        seen.append(req.path)

    client = serve(make_config(post_request=post_request))
    client.send(request_bytes("GET", "/two"))
    assert client.read_response().status == 201
    assert seen == ["/two"]


def test_a_raising_pre_request_answers_500_as_gunicorn_does(serve, caplog):
    def pre_request(worker, req):
        raise RuntimeError("quota lookup failed")

    ran = []

    def app(environ, start_response):
        ran.append(True)
        return hello(environ, start_response)

    client = serve(make_config(pre_request=pre_request), app)
    client.send(request_bytes("GET", "/x"))
    assert client.read_response().status == 500
    assert not ran
    assert "quota lookup failed" in caplog.text and "Traceback" in caplog.text


def test_a_raising_post_request_is_logged_and_the_connection_serves_on(serve, caplog):
    def post_request(worker, req, environ, resp):
        raise RuntimeError("metrics backend down")

    client = serve(make_config(post_request=post_request))
    for path in ("/one", "/two"):
        client.send(request_bytes("GET", path))
        assert client.read_response().body == b"hello " + path.encode()
    assert caplog.text.count("Exception in the post_request hook") == 2
    assert "metrics backend down" in caplog.text


def test_setting_alive_false_asks_the_shard_to_retire_once():
    worker = make_server(config := make_config()).forking(0, 1, config)
    worker.alive = False  # not serving yet: nobody to ask, and nothing breaks
    asked = []
    worker = make_server(config := make_config()).forking(0, 1, config)
    worker.retire = lambda: asked.append(True)
    worker.alive = True
    assert asked == []
    worker.alive = False
    worker.alive = False
    assert asked == [True] and worker.alive is False


def test_a_shards_hooks_are_its_generations_and_the_servers_the_configuration_read_last():
    seen = []
    first = make_config(pre_fork=lambda server, worker: seen.append(("pre_fork", "first")),
                        child_exit=lambda server, worker: seen.append(("child_exit", "first")))
    second = make_config(on_reload=lambda server: seen.append(("on_reload", "second")),
                         pre_fork=lambda server, worker: seen.append(("pre_fork", "second")))
    server = make_server(first)
    old = server.forking(0, 1, first)
    server.forked(old, 1001)
    server.config = second  # a reload read the file again
    server.call("on_reload")
    new = server.forking(0, 2, second)
    assert (old.cfg.timeout, new.config) == (first.timeout, second)
    server.reaped(1001)  # generation 1's shard: generation 1's child_exit
    assert seen == [("pre_fork", "first"), ("on_reload", "second"), ("pre_fork", "second"),
                    ("child_exit", "first")]
    assert server.cfg.workers == second.shards
