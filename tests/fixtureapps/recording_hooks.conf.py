# A gunicorn config file defining every server hook; each appends one JSON line
# to $HOOK_LOG (hook name, the process it ran in, and what it was given), so a
# test can check the moment and the arguments of every call.
#
# $HOOK_FAIL_POST_FORK names a file: while it exists, post_fork raises.
import json
import os
import socket
import time

_log_path = os.environ["HOOK_LOG"]


def _record(hook, **details):
    line = json.dumps({"hook": hook, "pid": os.getpid(), **details})
    with open(_log_path, "a") as handle:
        handle.write(line + "\n")


def _server(server):
    return {"server_pid": server.pid, "num_workers": server.num_workers,
            "workers_setting": server.cfg.workers}


def _worker(worker):
    return {"worker_pid": worker.pid, "age": worker.age, "ppid": worker.ppid}


def on_starting(server):
    _record("on_starting", **_server(server))


def when_ready(server):
    _record("when_ready", **_server(server))


def on_reload(server):
    _record("on_reload", **_server(server))


def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new=new_value, old=old_value)


def pre_fork(server, worker):
    _record("pre_fork", **_server(server), **_worker(worker))


def post_fork(server, worker):
    import gevent.socket

    fail_marker = os.environ.get("HOOK_FAIL_POST_FORK")
    if fail_marker and os.path.exists(fail_marker):
        raise RuntimeError("post_fork cannot reach the database")
    # What a psycogreen-style hook sees: is the standard library patched yet?
    _record("post_fork", **_server(server), **_worker(worker),
            socket_patched=socket.socket is gevent.socket.socket)


def post_worker_init(worker):
    _record("post_worker_init", **_worker(worker), has_app=callable(worker.wsgi))


def worker_int(worker):
    _record("worker_int", **_worker(worker))


def worker_abort(worker):
    _record("worker_abort", **_worker(worker))


def pre_request(worker, req):
    req.hook_started = time.monotonic()
    _record("pre_request", **_worker(worker), method=req.method, path=req.path,
            query=req.query, version=list(req.version), headers=req.headers)


def post_request(worker, req, environ, resp):
    _record("post_request", **_worker(worker), path=req.path,
            kept_state=hasattr(req, "hook_started"), script=environ["PATH_INFO"],
            status=resp.status, status_code=resp.status_code, sent=resp.sent)


def child_exit(server, worker):
    _record("child_exit", **_worker(worker))


def worker_exit(server, worker):
    _record("worker_exit", **_worker(worker))


def pre_exec(server):
    _record("pre_exec", **_server(server))


def on_exit(server):
    _record("on_exit", **_server(server))


def ssl_context(config, default_ssl_context_factory):
    context = default_ssl_context_factory()
    context.set_alpn_protocols(["http/1.1"])  # visible to a client: this context serves
    _record("ssl_context", certfile=config.certfile)
    return context
