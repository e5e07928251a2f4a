"""Checks that the workspace's rust-version (Cargo.toml), the Dockerfiles' Rust images and the
README agree, and that no dependency in the lockfile needs a newer Rust than the workspace
declares (a `--locked` build on the declared toolchain would fail). Reads `cargo metadata`.

    cargo metadata --format-version 1 --locked | python3 scripts/check-rust-version.py
"""

from __future__ import annotations

import json
import pathlib
import re
import sys


def version(text: str) -> tuple[int, int, int]:
    parts = [int(part) for part in text.split(".")[:3]]
    major, minor, patch = (parts + [0, 0])[:3]
    return (major, minor, patch)


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    metadata = json.load(sys.stdin)
    members = set(metadata["workspace_members"])
    declared = {p["rust_version"] for p in metadata["packages"] if p["id"] in members}
    problems: list[str] = []
    if len(declared) != 1 or None in declared:
        problems.append(f"workspace members declare rust-version {sorted(map(str, declared))}: one, from the workspace")
        return report(problems)
    workspace = declared.pop()
    for package in metadata["packages"]:
        needs = package.get("rust_version")
        if package["id"] in members or not needs:
            continue
        if version(needs) > version(workspace):
            problems.append(f"{package['name']} {package['version']} needs Rust {needs}, the workspace declares {workspace}")
    short = ".".join(workspace.split(".")[:2])
    for dockerfile in sorted(root.glob("**/Dockerfile")):
        if "target" in dockerfile.parts:
            continue
        for image in re.findall(r"FROM rust:([0-9.]+)", dockerfile.read_text()):
            if image != short:
                problems.append(f"{dockerfile.relative_to(root)} builds with rust:{image}, the workspace declares {short}")
    if f"{short} or newer" not in (root / "README.md").read_text():
        problems.append(f"README.md does not say Rust {short} or newer")
    return report(problems, workspace)


def report(problems: list[str], workspace: str | None = None) -> int:
    for problem in problems:
        print(f"rust-version: {problem}", file=sys.stderr)
    if not problems:
        print(f"rust-version {workspace}: the lockfile, the Dockerfiles and the README agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
