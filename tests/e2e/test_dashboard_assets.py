"""The dashboard's files: the vendored libraries are byte for byte the files their npm packages
publish (as recorded in vendor/manifest.json), each with its licence, and the page loads nothing
from outside this server."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import api.http

DASHBOARD = Path(api.http.__file__).parent / "dashboard"
VENDOR = DASHBOARD / "vendor"


def manifest() -> list[dict[str, object]]:
    return list(json.loads((VENDOR / "manifest.json").read_text())["files"])


def test_every_vendored_file_matches_the_sha256_its_manifest_records() -> None:
    entries = manifest()
    assert {e["file"] for e in entries} == {p.name for p in VENDOR.glob("*.js")}
    for entry in entries:
        digest = hashlib.sha256((VENDOR / str(entry["file"])).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{entry['file']} is not the file of {entry['package']}@{entry['version']}"
        assert str(entry["version"]) in str(entry["file"])  # the name carries the version (cached as immutable)
        assert str(entry["integrity"]).startswith("sha512-")
        for item in [entry, *entry["bundles"]]:  # type: ignore[list-item]
            licence = (VENDOR / item["licenseFile"]).read_text()
            assert item["license"] == "MIT" and "Permission is hereby granted" in licence


def test_the_page_imports_only_its_own_files() -> None:
    for path in [*DASHBOARD.glob("*.html"), *DASHBOARD.glob("*.css"), *(DASHBOARD / "js").glob("*.js")]:
        text = path.read_text()
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text), path
        assert not re.search(r"""(?:from|import)\s*\(?\s*["'](?:https?:)?//""", text), path
        assert not re.search(r"@import|url\(\s*[\"']?(?:https?:)?//", text), path
        assert "innerHTML" not in text and "outerHTML" not in text and "insertAdjacentHTML" not in text, path
        assert "eval(" not in text and "new Function" not in text, path
    imported = {
        m.group(1)
        for path in (DASHBOARD / "js").glob("*.js")
        for m in re.finditer(r"""from\s+["'](\.\./vendor/[^"']+)["']""", path.read_text())
    }
    assert imported == {f"../vendor/{e['file']}" for e in manifest()}


def test_the_package_ships_the_dashboard_files() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["api"]
    served = [p for p in DASHBOARD.rglob("*") if p.is_file() and p.suffix in (".html", ".css", ".svg", ".js")]
    root = Path(api.__file__).parent
    for path in served:
        relative = path.relative_to(root)
        assert any(relative.match(pattern) for pattern in patterns), f"{relative} is not package data"
