"""A gshard process serves a request and stops cleanly on SIGTERM."""

import requests


def test_serves_and_stops(gshard_proc):
    server = gshard_proc("hello:app", "--shards", "2")
    response = requests.get(server.url + "/", timeout=5)
    assert response.status_code == 200
    assert response.text == "hello\n"
    assert response.headers["Server"] == "gshard"
    assert server.stop() == 0
