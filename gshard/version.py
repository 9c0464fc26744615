"""gshard's version, and the name it gives itself in responses and logs.

A module of its own, so the HTTP core can name the server without importing
the package's root, whose ``run`` reaches every other layer.
"""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"gshard/{__version__}"
