"""Generate (or check) package.json's `contributes.configuration` from the server's settings.

Every server setting comes from `torch_lsp.config.settings_reference()`, so the extension cannot
drift from the code; the few client-only settings (how to start the server, tracing) are listed
here. Run from the repository root:

    python editors/vscode/sync_settings.py          # rewrite package.json
    python editors/vscode/sync_settings.py --check  # exit 1 if package.json is out of date

tests/editors/test_vscode.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PACKAGE_JSON = Path(__file__).resolve().with_name("package.json")
PREFIX = "torchLsp."

# Settings read by the extension itself and never sent to the server (src/settings.ts strips the
# top-level sections `server` and `trace`). `restricted`: VS Code ignores a workspace's value of
# these in an untrusted workspace, because they choose which program runs.
CLIENT_SETTINGS: dict[str, dict[str, Any]] = {
    "server.path": {
        "type": ["string", "null"], "default": None, "restricted": True,
        "markdownDescription": "Path of the `torch-lsp` executable. When set, the extension runs "
                               "`<path> serve` and ignores `#torchLsp.server.python#`.",
    },
    "server.python": {
        "type": ["string", "null"], "default": None, "restricted": True,
        "markdownDescription": "Interpreter that runs `python -m torch_lsp serve`. Default: the "
                               "interpreter selected in the Python extension when it is installed, "
                               "else `torch-lsp` from `PATH`.",
    },
    "server.args": {
        "type": "array", "items": {"type": "string"}, "default": [], "restricted": True,
        "markdownDescription": "Extra arguments after `serve`, e.g. `[\"--log-file\", \"/tmp/torch-lsp.log\"]`.",
    },
    "trace.server": {
        "type": "string", "enum": ["off", "messages", "verbose"], "default": "off",
        "markdownDescription": "Log the LSP messages between VS Code and the server to the output channel.",
    },
}
RESTRICTED_SERVER_SETTINGS = {"training.python"}  # a workspace must not pick the training interpreter


def server_properties() -> dict[str, dict[str, Any]]:
    from torch_lsp.config import settings_reference

    properties: dict[str, dict[str, Any]] = {}
    for row in settings_reference():
        kind: Any = row["type"]
        if row["default"] is None:
            kind = [kind, "null"]
        prop: dict[str, Any] = {"type": kind, "default": row["default"], "markdownDescription": row["description"]}
        if row["enum"]:
            prop["enum"] = row["enum"]
        if row["type"] == "array":
            prop["items"] = {"type": "string"}
        if row["type"] == "object":
            prop["additionalProperties"] = {"type": "string", "enum": ["error", "warning", "info", "hint"]}
        properties[row["key"]] = prop
    return properties


def configuration() -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key, prop in {**CLIENT_SETTINGS, **server_properties()}.items():
        prop = {name: value for name, value in prop.items() if name != "restricted"}
        properties[PREFIX + key] = {**prop, "order": len(properties)}
    return {"title": "torch-lsp", "properties": properties}


def restricted_configurations() -> list[str]:
    keys = [key for key, prop in CLIENT_SETTINGS.items() if prop.get("restricted")]
    return [PREFIX + key for key in keys + sorted(RESTRICTED_SERVER_SETTINGS)]


def updated(package: dict[str, Any]) -> dict[str, Any]:
    package = json.loads(json.dumps(package))  # a deep copy; the caller's dict stays as read
    package.setdefault("contributes", {})["configuration"] = configuration()
    trust = package.setdefault("capabilities", {}).setdefault("untrustedWorkspaces", {})
    trust["restrictedConfigurations"] = restricted_configurations()
    return package


def render(package: dict[str, Any]) -> str:
    return json.dumps(package, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if package.json is out of date")
    args = parser.parse_args(argv)
    current = PACKAGE_JSON.read_text(encoding="utf-8")
    wanted = render(updated(json.loads(current)))
    if args.check:
        if current != wanted:
            print(f"{PACKAGE_JSON} is out of date: run python editors/vscode/sync_settings.py", file=sys.stderr)
            return 1
        return 0
    PACKAGE_JSON.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    sys.exit(main())
