"""The API page at /docs, opened in headless Chromium: every operation of openapi.yaml is listed, all of it served locally."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from testkit.contract import SCHEMA
from testkit.serve import ROOT, ServeProcess

pytestmark = [pytest.mark.integration, pytest.mark.harness]

# Flags that run Chromium here: no sandbox (root), no GPU, and none of its own network traffic.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """Debian's Chromium; a clear failure, not a skip, when it is missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Headless Chromium is needed to open /docs (Debian's package chromium). ./scripts/test installs it with "
        "apt-get when it runs as root; otherwise install it: sudo apt-get install -y chromium"
    )


def rendered_dom(url: str) -> str:
    """The page's DOM after its scripts ran (a virtual-time budget lets Swagger UI fetch and render)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_docs_lists_every_operation_of_openapi_yaml() -> None:
    """Each operation (method, path, operationId) appears on the rendered page, and the page fetched only local files."""
    document = SCHEMA.raw_schema  # openapi.yaml as parsed
    operations = [
        (method.upper(), path, operation["operationId"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 6
    with ServeProcess("--users", "5", "--no-timer") as serve:
        dom = rendered_dom(f"{serve.base}/docs")
        output = serve.output()
    missing = [
        (method, path)
        for method, path, operation_id in operations
        if f'id="operations-default-{operation_id}"' not in dom or f'data-path="{path}"' not in dom
    ]
    assert not missing, f"not on the page: {missing}\n{dom[:2000]}"
    assert document["info"]["title"] in dom
    # Swagger UI came from this server (node_modules), and the document from the app's own route.
    assert "INFO serve: GET /docs/{file} 200" in output and "INFO serve: GET /api/openapi.yaml 200" in output
    assert (Path(ROOT) / "node_modules" / "swagger-ui-dist" / "package.json").exists()
