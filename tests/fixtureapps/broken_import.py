"""An application module that fails while it is imported."""


def _configure():
    raise RuntimeError("broken_import: the database URL is not set")


_configure()


def app(environ, start_response):  # never reached
    start_response("200 OK", [])
    return [b""]
