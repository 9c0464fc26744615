"""A Flask app, to see how much of the server's speed-up survives a framework."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def hello():
    return "Hello, world!\n"


@app.get("/json")
def as_json():
    items = [{"id": i, "name": f"item {i}"} for i in range(10)]
    return jsonify(message="Hello, world!", items=items)
