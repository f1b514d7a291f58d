#!/usr/bin/env python3
"""Writes strict JSON schemas for kubeconform, one per Kubernetes kind, from a Kubernetes
OpenAPI `_definitions.json` (as published by kubernetes-json-schema), without network access.

    python3 scripts/k8s-schemas.py DEFINITIONS.json OUT_DIR

OUT_DIR gets `<kind>-<group>-<version>.json` (`deployment-apps-v1.json`, `service-v1.json`),
kubeconform's file names for `-schema-location 'OUT_DIR/{{.ResourceKind}}{{.KindSuffix}}.json'`.
"Strict" as kubeconform's `-strict` schemas: every object that lists its properties refuses any
other (a misspelt `readinesProbe` is an error, not ignored). Each file holds the referenced
definitions under `definitions`, so it stands alone.
"""
import copy
import json
import os
import sys


def strict(node):
    """Adds additionalProperties: false to every object schema that lists properties."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


def refs(node, out):
    """The definition names `node` refers to, transitively (`#/definitions/<name>`)."""
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith("#/definitions/"):
            out.add(r[len("#/definitions/"):])
        for v in node.values():
            refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out_dir = sys.argv[1], sys.argv[2]
    with open(src) as f:
        defs = json.load(f)["definitions"]
    strict(defs)
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            kind, group, version = gvk["kind"].lower(), gvk["group"], gvk["version"]
            suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
            needed, todo = set(), {name}
            while todo:
                n = todo.pop()
                if n in needed:
                    continue
                needed.add(n)
                found = set()
                refs(defs[n], found)
                todo |= found - needed
            doc = copy.deepcopy(schema)
            doc["definitions"] = {n: defs[n] for n in sorted(needed)}
            # kubeconform matches by file name; the kind and apiVersion must match too.
            api = f"{group}/{version}" if group else version
            props = doc.setdefault("properties", {})
            props["kind"] = {"type": "string", "enum": [gvk["kind"]]}
            props["apiVersion"] = {"type": "string", "enum": [api]}
            doc["required"] = sorted(set(doc.get("required", [])) | {"kind", "apiVersion"})
            with open(os.path.join(out_dir, f"{kind}{suffix}.json"), "w") as f:
                json.dump(doc, f)
            written += 1
    if written < 50:
        sys.exit(f"{src}: only {written} kinds; not a Kubernetes definitions file?")
    print(f"{written} strict schemas in {out_dir}")


if __name__ == "__main__":
    main()
