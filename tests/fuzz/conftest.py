"""The fuzz runs are started by hand (``python -m tests.fuzz.fuzz_protocol``), never by pytest."""

collect_ignore_glob = ["*.py"]
