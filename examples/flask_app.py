"""The Flask app of the README's first command: ``gshard --chdir examples flask_app:app``."""

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from gshard!\n"


@app.get("/json")
def as_json():
    return jsonify(message="hello", shard_pid=os.getpid())


@app.post("/echo")
def echo():
    data = request.get_data()
    return jsonify(length=len(data), content_type=request.content_type)
