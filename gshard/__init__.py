"""gshard: a sharded gevent WSGI server with lossless hot restarts."""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"gshard/{__version__}"
