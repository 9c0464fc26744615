"""Long fuzz runs, outside CI: see fuzz_protocol.py."""
