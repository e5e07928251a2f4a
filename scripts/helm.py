"""A small `helm` for machines without the helm binary: `template`, `lint` and `version`, backed
by the real Helm v4 engine that the PyPI package helm-python-sdk embeds (libhelm_c).

Run it through scripts/helm, which provides the venv. The output of `template` follows
`helm template`: documents sorted in Helm's install order, each preceded by `---` and a
`# Source:` comment; hooks after the rest; NOTES.txt left out. Exit status 1 with the engine's
message on standard error when a chart does not load, a value breaks the schema or a template
fails; 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from typing import Any

import helm_python as helm
import yaml

# Helm's releaseutil.InstallOrder: kinds not listed sort after these, by kind name.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]
# Helm's releaseutil.SplitManifests separator.
SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")


class UsageError(Exception):
    pass


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Later values files win key by key, maps merge recursively (as `helm -f a -f b` does)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def user_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in args.values:
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except OSError as e:
            raise UsageError(f"cannot read values file {path}: {e.strerror}") from e
        loaded = helm.values_from_yaml(text)
        values = deep_merge(values, loaded or {})
    for kind, parse in (
        ("set", helm.parse_set_string),
        ("set_string", helm.parse_set_string_values),
        ("set_json", helm.parse_set_json),
    ):
        for expression in getattr(args, kind):
            values = deep_merge(values, parse(expression))
    return values


def split_documents(text: str) -> list[str]:
    return [doc.strip() for doc in SEPARATOR.split(text) if doc.strip()]


def head(doc: str) -> dict[str, Any]:
    try:
        parsed = yaml.safe_load(doc)
    except yaml.YAMLError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def kind_rank(kind: str) -> tuple[int, str]:
    try:
        return (INSTALL_ORDER.index(kind), "")
    except ValueError:
        return (len(INSTALL_ORDER), kind)


def hook_of(doc: dict[str, Any]) -> str | None:
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    return annotations.get("helm.sh/hook")


def is_test_hook(hook: str) -> bool:
    """Helm counts `test-success`, Helm 2's spelling, as a test hook too."""
    return any(event.strip() in ("test", "test-success") for event in hook.split(","))


def template(args: argparse.Namespace) -> int:
    values = user_values(args)
    with helm.Chart.load(args.chart) as chart:
        rendered = chart.render(
            values,
            name=args.name,
            namespace=args.namespace,
            is_install=not args.is_upgrade,
            is_upgrade=args.is_upgrade,
        )
        crds = [(c["filename"], c["data"]) for c in chart.crds] if args.include_crds else []
    manifests: list[tuple[str, str, dict[str, Any]]] = []
    hooks: list[tuple[str, str, dict[str, Any]]] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        if args.show_only and not any(path.endswith(s) or path == s for s in args.show_only):
            continue
        for doc in split_documents(rendered[path]):
            parsed = head(doc)
            hook = hook_of(parsed)
            if hook is None:
                manifests.append((path, doc, parsed))
            elif not (args.skip_tests and is_test_hook(hook)):
                hooks.append((path, doc, parsed))
    if args.show_only and not manifests and not hooks:
        print(f"Error: could not find template {', '.join(args.show_only)} in chart", file=sys.stderr)
        return 1
    manifests.sort(key=lambda m: kind_rank(str(m[2].get("kind", ""))))
    out = sys.stdout
    for filename, data in crds:
        out.write(f"---\n# Source: {filename}\n{data.strip()}\n")
    for path, doc, _ in manifests + hooks:
        out.write(f"---\n# Source: {path}\n{doc}\n")
    return 0


def lint(args: argparse.Namespace) -> int:
    values = user_values(args)
    failed = 0
    for path in args.charts:
        report = helm.lint(
            path,
            values or None,
            strict=args.strict,
            namespace=args.namespace,
            kube_version=args.kube_version,
        )
        severities = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
        print(f"==> Linting {path}")
        for message in report.get("messages", []):
            level = severities.get(message.get("severity", 0), "UNKNOWN")
            if args.quiet and level == "INFO":
                continue
            print(f"[{level}] {message.get('path', '')}: {message.get('error', '')}")
        errors = report.get("errors") or []
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= (2 if args.strict else 3)]
        if errors or bad:
            for error in errors:
                print(f"Error: {error}")
            failed += 1
        print()
    total = len(args.charts)
    print(f"{total} chart(s) linted, {failed} chart(s) failed")
    return 1 if failed else 0


def version(_: argparse.Namespace) -> int:
    print(json.dumps({"helm": helm.helm_sdk_version(), "libhelm_c": helm.helm_c_version(), "helm-python-sdk": helm.__version__}))
    return 0


def add_value_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--values", action="append", default=[], metavar="FILE", help="values file (repeatable; - for stdin)")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="set values (repeatable)")
    p.add_argument("--set-string", dest="set_string", action="append", default=[], metavar="K=V")
    p.add_argument("--set-json", dest="set_json", action="append", default=[], metavar="K=JSON")
    p.add_argument("-n", "--namespace", default="default")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="helm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("template", help="render a chart locally and print the manifests")
    t.add_argument("first", metavar="NAME", help="release name (release-name when only CHART is given)")
    t.add_argument("second", nargs="?", metavar="CHART")
    add_value_flags(t)
    t.add_argument("--include-crds", action="store_true")
    t.add_argument("--skip-tests", action="store_true")
    t.add_argument("--is-upgrade", action="store_true")
    t.add_argument("-s", "--show-only", action="append", default=[], metavar="TEMPLATE")
    t.set_defaults(run=template)
    l = sub.add_parser("lint", help="examine charts for possible issues")
    l.add_argument("charts", nargs="+", metavar="CHART")
    add_value_flags(l)
    l.add_argument("--strict", action="store_true", help="fail on lint warnings")
    l.add_argument("--kube-version", default=None)
    l.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    l.set_defaults(run=lint)
    v = sub.add_parser("version", help="print the Helm engine's version")
    v.set_defaults(run=version)
    return p


def main(argv: list[str]) -> int:
    # `scripts/helm template ... | head` ends quietly, as a Go binary would.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    p = parser()
    args = p.parse_args(argv)
    if args.command == "template":
        if args.second is None:
            args.name, args.chart = "release-name", args.first
        else:
            args.name, args.chart = args.first, args.second
    try:
        return args.run(args)
    except UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    except helm.HelmError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
