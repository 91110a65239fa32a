"""Every value in charts/quiver/values.yaml changes what the chart renders.

Starts from a base that turns every optional part on (ci/all-on values), changes one leaf value at a
time to another value the schema accepts, renders, and fails naming each leaf whose change left
the output unchanged: a value no template reads (or reads only where the base cannot reach).
Usage: python chart-values-used.py HELM CHART_DIR
"""

import copy
import json
import subprocess
import sys

import yaml

helm, chart = sys.argv[1], sys.argv[2]
values = yaml.safe_load(open(f"{chart}/values.yaml"))
schema = json.load(open(f"{chart}/values.schema.json"))

# Everything optional on, and a fixed Iroh key Secret name: the chart-made key is random per render.
base = copy.deepcopy(values)
base["operator"]["iroh"]["existingSecret"] = "fixed-iroh"
base["agent"]["kvm"]["mode"] = "devicePlugin"
base["agent"]["metrics"]["serviceMonitor"]["enabled"] = True
base["operator"]["metrics"]["serviceMonitor"]["enabled"] = True
base["grafana"]["dashboard"]["enabled"] = True
base["agent"]["hostNetwork"] = True


def render(vals):
    out = subprocess.run(
        [helm, "template", "t", chart, "-n", "quiver-system", "-f", "-"],
        input=yaml.safe_dump(vals), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"helm template failed:\n{out.stderr}")
    return out.stdout


def subschema(path):
    s = schema
    for key in path:
        props = s.get("properties", {})
        s = props.get(key, {}) if key in props else (s.get("additionalProperties") or {})
    return s


def other(value, s):
    """A different value that the schema allows."""
    if "enum" in s:
        return next(v for v in s["enum"] if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        if s.get("pattern", "").startswith("^(\\d"):   # an IPv4 address
            return "0.0.0.0" if value != "0.0.0.0" else "127.0.0.1"
        if s.get("pattern") == "^[0-9]+(ms|s|m|h)$":
            return "45s"
        if s.get("pattern", "").startswith("^(grpc|iroh|dual)"):
            return "iroh" if value != "iroh" else "grpc"
        if s.get("pattern", "").startswith("^(https?://"):   # a URL
            return "https://changed.example" if value != "https://changed.example" else ""
        return value + "x" if value else "changed"
    if isinstance(value, list):
        items = s.get("items", {})
        if items.get("pattern") == "^[0-9a-f]{64}$":
            return value + ["ab" * 32]
        if items.get("pattern") == "^/":
            return value + ["/srv/extra"]
        if items.get("type") == "string":
            return value + ["extra"]
        return value + [{"key": "k", "operator": "Exists"}]
    if isinstance(value, dict):
        return {**value, "example.com/key": "v"}
    raise ValueError(f"no other value for {value!r}")


def leaves(node, path=()):
    """Leaf paths: scalars, lists, and maps whose schema allows any key (free-form maps)."""
    s = subschema(path)
    if isinstance(node, dict) and s.get("properties"):
        for key, child in node.items():
            yield from leaves(child, path + (key,))
    else:
        yield path


def set_path(vals, path, value):
    for key in path[:-1]:
        vals = vals[key]
    vals[path[-1]] = value


def get_path(vals, path):
    for key in path:
        vals = vals[key]
    return vals


reference = render(base)
unused = []
count = 0
for path in leaves(values):
    s = subschema(path)
    current = get_path(base, path)
    if isinstance(current, dict) and not current and s.get("type") == "object" and not s.get("additionalProperties"):
        changed = {"podAntiAffinity": {}}   # affinity: any object
    elif path[-1] == "updateStrategy":
        changed = {"type": "OnDelete"}
    elif path[-1] == "resources":
        changed = {**current, "limits": {"cpu": "3"}}
    else:
        changed = other(current, s)
    vals = copy.deepcopy(base)
    set_path(vals, path, changed)
    count += 1
    if render(vals) == reference:
        unused.append(".".join(path))

if unused:
    print("values that change nothing the chart renders:", ", ".join(unused))
    sys.exit(1)
print(f"every value is used: {count} leaves, each changes the rendered chart")
