"""The OpenAPI conformance tests skip without the spec on a plain clone, and fail in CI.

Each case runs pytest on one spec-only test of tests/test_emulator_openapi.py in a
child process, with RCFS_OPENAPI_SPEC naming a file that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

TARGET = "tests/test_emulator_openapi.py::test_departures_relax_exactly_their_field"


def run_without_spec(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["RCFS_OPENAPI_SPEC"] = str(tmp_path / "no-such-spec.yml")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", TARGET],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_a_missing_spec_skips_outside_ci(tmp_path, ci):
    result = run_without_spec(tmp_path, ci)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "spec not found" in result.stdout, result.stdout


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_a_missing_spec_fails_in_ci(tmp_path, ci):
    result = run_without_spec(tmp_path, ci)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "spec not found" in result.stdout and "CI is set" in result.stdout, result.stdout
    assert "skipped" not in result.stdout
