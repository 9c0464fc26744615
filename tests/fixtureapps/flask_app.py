"""A small Flask application: routing, JSON and request data through a real framework."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "flask says hi"


@app.post("/items/<name>")
def create(name):
    payload = request.get_json(force=True)
    return jsonify(name=name, payload=payload, args=request.args.to_dict()), 201


@app.post("/upload")
def upload():
    return {"size": len(request.get_data())}


@app.get("/smuggled")
def smuggled():
    return "this request was hidden in a body", 200
