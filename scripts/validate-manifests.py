"""Strict schema validation of rendered manifests (multi-document YAML files, or - for stdin)
against the Kubernetes OpenAPI schemas that the PyPI package kubernetes-validate ships.

    validate-manifests.py -k 1.25.0 [-k 1.33.0]... [--skip-kind APIVERSION/KIND]... FILE...

Strict: a field the schema does not know is an error. Kinds without a schema in the package
(custom resources) fail unless listed with --skip-kind, so a typo in an apiVersion cannot slip
through as "unknown". Exit status 1 when anything is invalid, with one line per problem.
"""

from __future__ import annotations

import argparse
import sys

import kubernetes_validate
from kubernetes_validate.utils import VersionNotSupportedError
import yaml


def documents(path: str) -> list[tuple[str, object]]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise SystemExit(f"{path}: not YAML: {e}")
    return [(f"{path}#{i}", doc) for i, doc in enumerate(docs) if doc is not None]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("-k", "--kubernetes-version", action="append", required=True,
                   help="a Kubernetes version to validate for (repeatable: each object must be valid for all)")
    p.add_argument("--skip-kind", action="append", default=[], metavar="APIVERSION/KIND",
                   help="a custom resource without a schema here, e.g. monitoring.coreos.com/v1/ServiceMonitor")
    args = p.parse_args(argv)
    skip = set(args.skip_kind)
    checked = skipped = invalid = 0
    problems: list[str] = []
    for path in args.files:
        for origin, doc in documents(path):
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                problems.append(f"{origin}: not a Kubernetes object (no apiVersion/kind)")
                checked += 1
                invalid += 1
                continue
            gvk = f"{doc['apiVersion']}/{doc['kind']}"
            name = (doc.get("metadata") or {}).get("name", "?")
            what = f"{origin} {doc['kind']}/{name}"
            if gvk in skip:
                skipped += 1
                continue
            before = len(problems)
            for version in args.kubernetes_version:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.SchemaNotFoundError as e:
                    problems.append(f"{what}: {e.message} (list it with --skip-kind {gvk} if it is a custom resource)")
                except kubernetes_validate.ValidationError as e:
                    location = ".".join(str(x) for x in e.path) or "(top level)"
                    problems.append(f"{what}: Kubernetes {version}: {location}: {e.message}")
                except VersionNotSupportedError as e:
                    raise SystemExit(e.message)
            checked += 1
            invalid += len(problems) > before
    for problem in problems:
        print(f"invalid: {problem}", file=sys.stderr)
    versions = ", ".join(args.kubernetes_version)
    print(f"{checked - invalid} of {checked} object(s) valid for Kubernetes {versions}; {skipped} custom resource(s) skipped")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
