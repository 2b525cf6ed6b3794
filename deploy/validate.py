#!/usr/bin/env python3
"""Offline checks of the deployment files that need no cluster.

- Every KServe object in deploy/kserve/ against the ``openAPIV3Schema`` of
  its CustomResourceDefinition (the CRDs KServe publishes, read from
  ``--crds``), and, as the API server would prune them silently, no field
  the schema does not declare (a misspelt field is an error here).
- deploy/Dockerfile: it parses, every variant has a base stage, the image
  runs as a non-root user, and the entry point is in exec form.

The Kubernetes objects are checked by ``kubernetes-validate`` and every
YAML file by ``yamllint`` (deploy/check.sh runs all three).
"""

import argparse
import gzip
import pathlib
import sys

import jsonschema
import yaml
from dockerfile_parse import DockerfileParser

HERE = pathlib.Path(__file__).resolve().parent


def crd_files(crd_dir):
    """name -> path of the CRDs in a directory, plain or gzip-compressed."""
    found = {}
    for path in sorted(crd_dir.glob("serving.kserve.io_*.yaml*")):
        found[path.name.removesuffix(".gz")] = path
    return found


def read_crd(path):
    data = path.read_bytes()
    return gzip.decompress(data).decode() if path.suffix == ".gz" else data.decode()


def check_copies(vendored, upstream):
    """The vendored CRDs are the upstream ones, unchanged."""
    errors = []
    ours, theirs = crd_files(vendored), crd_files(upstream)
    for name, path in theirs.items():
        if name not in ours:
            errors.append(f"{vendored}: no copy of {name}")
        elif read_crd(ours[name]) != read_crd(path):
            errors.append(f"{ours[name]} differs from {path}: copy it again (gzip -9 -n)")
    if not errors:
        print(f"the CRDs in {vendored} are those of {upstream}")
    return errors


def crd_schemas(crd_dir):
    """(apiVersion, kind) -> the served version's openAPIV3Schema."""
    schemas = {}
    files = crd_files(crd_dir)
    if not files:
        raise SystemExit(
            f"no KServe CRDs (serving.kserve.io_*.yaml[.gz]) in {crd_dir}: pass --crds DIR"
        )
    for path in files.values():
        crd = yaml.safe_load(read_crd(path))
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"][
                    "openAPIV3Schema"
                ]
    return schemas


def unknown_fields(value, schema, path):
    """The fields of `value` that `schema` does not declare (what the API
    server would drop without a word)."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                found += unknown_fields(item, properties[key], where)
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, where)
            elif properties is not None and path not in ("metadata",) and not path.endswith(
                ".metadata"
            ):
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def check_kserve(crd_dir):
    schemas = crd_schemas(crd_dir)
    errors = []
    files = sorted((HERE / "kserve").glob("*.yaml"))  # not crds/
    if not files:
        errors.append("deploy/kserve holds no YAML files")
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f"{path.name}: {key[1]} {doc.get('metadata', {}).get('name')}"
            schema = schemas.get(key)
            if schema is None:
                errors.append(f"{name}: no CRD serves {key[0]} {key[1]}")
                continue
            validator = jsonschema.Draft4Validator(
                schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
            )
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in e.path)
                errors.append(f"{name}: {where}: {e.message}")
            for field in unknown_fields(doc, schema, ""):
                errors.append(f"{name}: {field}: not a field of {key[1]} (the API server would drop it)")
            print(f"checked {name} against the {key[0]} CRD")
    return errors


def check_dockerfile():
    errors = []
    parser = DockerfileParser(path=str(HERE / "Dockerfile"))
    instructions = parser.structure
    froms = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    stages = {f.split()[-1] for f in froms if " AS " in f.upper()}
    for variant in ("cpu", "cuda", "cann"):
        if f"base-{variant}" not in stages:
            errors.append(f"Dockerfile: no stage base-{variant}")
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        errors.append("Dockerfile: the image must end as a non-root USER")
    entry = [i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT"]
    if not entry or not entry[-1].lstrip().startswith("["):
        errors.append("Dockerfile: ENTRYPOINT must be in exec form (signals reach the server)")
    expose = [i["value"] for i in instructions if i["instruction"] == "EXPOSE"]
    if not expose:
        errors.append("Dockerfile: EXPOSE the gRPC and REST ports")
    print(f"checked Dockerfile: {len(froms)} stages, user {users[-1] if users else '?'}")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--crds",
        type=pathlib.Path,
        default=HERE / "kserve" / "crds",
        help="directory holding KServe's serving.kserve.io_*.yaml CRDs (default: the copies in deploy/kserve/crds)",
    )
    parser.add_argument(
        "--compare",
        type=pathlib.Path,
        help="also check that deploy/kserve/crds holds this directory's CRDs unchanged",
    )
    args = parser.parse_args()
    errors = []
    if args.compare:
        errors += check_copies(HERE / "kserve" / "crds", args.compare)
    errors += check_kserve(args.crds) + check_dockerfile()
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        return 1
    print("deploy/: every KServe object and the Dockerfile are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
