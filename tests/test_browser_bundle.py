"""The browser client the server serves (/client/timebank-realtime.js, which the dashboard imports) is the
npm package's bundle, built from clients/js: one source of truth. Rebuilding it gives the committed bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "js"
SERVED = ROOT / "timebank_realtime" / "static" / "timebank-realtime.js"
NPM = shutil.which("npm")
READY = NPM is not None and (PACKAGE / "node_modules" / "esbuild").is_dir()
if not READY and os.environ.get("CI"):
    raise RuntimeError("CI must check the served browser client: install Node.js and run `npm ci` in clients/js")


@pytest.mark.skipif(not READY, reason="needs npm and `npm ci` in clients/js (make test does both)")
def test_the_served_browser_client_is_the_bundle_of_the_npm_package() -> None:
    assert NPM is not None
    built = subprocess.run([NPM, "run", "--silent", "bundle"], cwd=PACKAGE, capture_output=True, text=True,
                           timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    bundle = (PACKAGE / "dist" / "browser" / "timebank-realtime.js").read_bytes()
    assert bundle == SERVED.read_bytes(), "run `npm run static` in clients/js and commit the served bundle"
    assert bundle.startswith(b"// timebank-realtime-client for browsers, built from clients/js")
    assert b"createClient" in bundle  # an export the dashboard imports (minified names keep exports)
