"""Shared test settings: where the fixture apps and the shared HTTP corpus live."""

from __future__ import annotations

import pathlib

TESTS = pathlib.Path(__file__).resolve().parent
FIXTURE_APPS = TESTS / "fixtureapps"
REPO = TESTS.parent
# The conformance corpus sits beside the checkout (../shared), as in CI.
CORPUS_DIR = REPO.parent / "shared" / "http-corpus"
