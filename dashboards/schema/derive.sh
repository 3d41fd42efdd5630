#!/usr/bin/env bash
# Derives dashboards/schema/dashboard.schema.json (draft-07) from Grafana's own
# published dashboard types, the npm package @grafana/schema, at a pinned version.
# Needs node and npm (Debian: apt-get install nodejs npm); about 20 s and 17 packages
# in a temporary folder. tests/test_dashboards_schema.py validates every
# dashboard against the result with python-jsonschema.
#
# One patch after generation, and why: Grafana's types give an annotation's
# `target` only the keys of the built-in "grafana" datasource (the type carries a
# "TODO: this should be a regular DataQuery" note), so no InfluxDB annotation
# would validate. The patch also accepts a data query there: an object with
# `refId`, `query` (string) and `rawQuery` (boolean), as Grafana stores it.
set -euo pipefail
GRAFANA_SCHEMA_VERSION=13.2.3
GENERATOR_VERSION=2.10.0
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo '{"private": true}' > package.json
npm install --no-audit --no-fund --silent \
  "@grafana/schema@${GRAFANA_SCHEMA_VERSION}" "ts-json-schema-generator@${GENERATOR_VERSION}"
npx ts-json-schema-generator \
  --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
  --type Dashboard --no-type-check > generated.json
python3 - generated.json "$here/dashboard.schema.json" "$GRAFANA_SCHEMA_VERSION" <<'PY'
import json
import sys

source, target, version = sys.argv[1:]
schema = json.load(open(source))
schema["$comment"] = (f"Derived from @grafana/schema {version} by dashboards/schema/derive.sh; "
                      "AnnotationTarget also accepts a data query (see the script).")
grafana_target = schema["definitions"]["AnnotationTarget"]
schema["definitions"]["AnnotationTarget"] = {"anyOf": [grafana_target, {
    "type": "object",
    "required": ["refId", "query", "rawQuery"],
    "properties": {"refId": {"type": "string"}, "query": {"type": "string"},
                   "rawQuery": {"type": "boolean"}},
}]}
with open(target, "w") as out:
    json.dump(schema, out, indent=1, sort_keys=True)
    out.write("\n")
PY
echo "wrote $here/dashboard.schema.json"
