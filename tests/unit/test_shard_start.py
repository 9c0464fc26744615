"""A shard's first step, run in a fresh interpreter: it patches the whole process."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
from importlib import metadata
original = metadata.entry_points
from gshard.shard.boot import patch_stdlib
patch_stdlib()
from gevent import monkey
assert monkey.is_module_patched("socket") and monkey.is_module_patched("ssl")
assert monkey.is_module_patched("threading") and monkey.is_module_patched("select")
assert metadata.entry_points is original, "the lookup cache outlived patch_all"
print("ok")
"""


def testpatch_stdlib_patches_everything_and_restores_the_plugin_lookup():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                            timeout=30)
    assert result.stdout.strip() == "ok", result.stderr
