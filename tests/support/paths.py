"""Where things are: the tests, the fixture apps, the repository and the shared HTTP corpus."""

from __future__ import annotations

import pathlib
import sys
from types import ModuleType

TESTS = pathlib.Path(__file__).resolve().parent.parent
FIXTURE_APPS = TESTS / "fixtureapps"
REPO = TESTS.parent
# The conformance corpus sits beside the checkout (../shared), as in CI.
CORPUS_DIR = REPO.parent / "shared" / "http-corpus"


def corpus_runner() -> ModuleType:
    """The shared corpus's runner module (``run_corpus.py``), imported from CORPUS_DIR."""
    if str(CORPUS_DIR) not in sys.path:
        sys.path.insert(0, str(CORPUS_DIR))
    import run_corpus

    return run_corpus
