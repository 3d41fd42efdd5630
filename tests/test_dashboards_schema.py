"""The dashboards fit Grafana's own types, follow the lint rules, and are what the generator writes.

Grafana cannot run here. Its published TypeScript types (npm ``@grafana/schema``,
pinned in dashboards/schema/derive.sh) were turned into a JSON Schema once and
committed; each dashboard is validated against it with ``jsonschema``. Each
check is also run on a broken copy, so a check that cannot fail would show.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
SCHEMA = json.loads((DASHBOARDS / "schema" / "dashboard.schema.json").read_text())
# Changing a uid breaks the kiosk URL and every bookmark: this list changes on purpose only.
UIDS = {"wall.json": "secadero-wall", "yard.json": "secadero-yard",
        "batch.json": "secadero-batch", "nodes.json": "secadero-nodes"}
# Grafana's own names in a query: macros, alias patterns, the All value.
BUILTIN = re.compile(r"\$(timeFilter|__interval|__all|tag_\w+|col)\b")


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / "json" / name).read_text(encoding="utf-8"))


def schema_errors(dashboard: dict[str, Any]) -> list[str]:
    """Every violation as ``path: message``; inside an anyOf (a panel is a Panel or a
    RowPanel) the alternatives' own errors are listed too."""
    validator = jsonschema.Draft7Validator(SCHEMA)
    found: list[str] = []

    def collect(errors: Any) -> None:
        for error in errors:
            found.append(f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
            collect(error.context or [])

    collect(validator.iter_errors(dashboard))
    return found


def provisioned_datasource_uid() -> str:
    text = (DASHBOARDS / "provisioning" / "datasources" / "secadero.yaml").read_text()
    [uid] = re.findall(r"^\s+uid:\s*(\S+)\s*$", text, flags=re.MULTILINE)
    return uid


def lint(dashboard: dict[str, Any], datasource_uid: str) -> list[str]:
    """The rules other projects apply to dashboards as code (e.g. labmon PR #32)."""
    problems = []
    uid = dashboard.get("uid", "")
    if not uid or len(uid) > 40:
        problems.append(f"uid {uid!r}: 1-40 characters")
    ids = [panel.get("id") for panel in dashboard["panels"]]
    if len(set(ids)) != len(ids) or None in ids:
        problems.append(f"panel ids not unique: {ids}")
    declared = {variable["name"] for variable in dashboard["templating"]["list"]}
    sources = [panel.get("datasource") for panel in dashboard["panels"]]
    sources += [target.get("datasource") for panel in dashboard["panels"]
                for target in panel["targets"]]
    sources += [variable.get("datasource") for variable in dashboard["templating"]["list"]]
    sources += [item.get("datasource") for item in dashboard["annotations"]["list"]]
    for source in sources:
        if source != {"type": "influxdb", "uid": datasource_uid}:
            problems.append(f"datasource {source} is not the provisioned {datasource_uid}")
    texts = [target["query"] for panel in dashboard["panels"] for target in panel["targets"]]
    texts += [variable["query"] for variable in dashboard["templating"]["list"]]
    texts += [item["target"]["query"] for item in dashboard["annotations"]["list"]]
    texts += [target.get("alias", "") for panel in dashboard["panels"]
              for target in panel["targets"]]
    for text in texts:
        for name in re.findall(r"\$(\w+)", BUILTIN.sub("", text)):
            if name not in declared:
                problems.append(f"${name} is not a declared variable: {text[:80]}")
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        position = panel["gridPos"]
        if position["x"] < 0 or position["w"] < 1 or position["x"] + position["w"] > 24:
            problems.append(f"panel {panel['title']!r} is outside the 24 columns: {position}")
        # Overlapping panels: Grafana pushes one down, and the wall's layout is lost.
        for x in range(position["x"], position["x"] + position["w"]):
            for y in range(position["y"], position["y"] + position["h"]):
                other = cells.setdefault((x, y), panel["title"])
                if other != panel["title"]:
                    problems.append(f"panel {panel['title']!r} overlaps {other!r}")
                    break
            else:
                continue
            break
    return problems


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_fits_grafanas_published_types(name: str) -> None:
    assert schema_errors(load(name)) == []


def test_the_schema_catches_a_wrong_type_and_an_unknown_key() -> None:
    broken = load("wall.json")
    broken["graphTooltip"] = 7
    broken["panels"][0]["gridPos"]["w"] = "24"
    broken["panels"][1]["colour"] = "red"
    errors = schema_errors(broken)
    assert any(error.startswith("graphTooltip: 7 is not one of") for error in errors), errors
    assert "panels/0/gridPos/w: '24' is not of type 'number'" in errors
    assert any(error.startswith("panels/1: Additional properties are not allowed ('colour'")
               for error in errors), errors


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_passes_the_lint_rules(name: str) -> None:
    dashboard = load(name)
    assert dashboard["uid"] == UIDS[name]
    assert lint(dashboard, provisioned_datasource_uid()) == []


def test_the_lint_rules_catch_each_mistake() -> None:
    broken = copy.deepcopy(load("nodes.json"))
    broken["uid"] = "x" * 41
    broken["panels"][1]["id"] = broken["panels"][0]["id"]
    broken["panels"][2]["targets"][0]["query"] += " AND $tray"
    broken["panels"][3]["gridPos"].update(x=20, w=6, y=100)  # off the grid, alone
    broken["panels"][4]["datasource"] = {"type": "influxdb", "uid": "other"}
    broken["panels"][6]["gridPos"] = dict(broken["panels"][5]["gridPos"])
    problems = lint(broken, provisioned_datasource_uid())
    assert [problem.split(" ")[0] for problem in problems] == [
        "uid", "panel", "datasource", "$tray", "panel", "panel"]
    assert problems[-1].endswith(f"overlaps {broken['panels'][5]['title']!r}")


def test_files_are_what_the_generator_writes() -> None:
    result = subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (DASHBOARDS / "json").glob("*.json")) == sorted(UIDS)


def test_the_generator_check_sees_a_hand_edit(tmp_path: Path) -> None:
    sys.path.insert(0, str(DASHBOARDS))
    try:
        import generate
    finally:
        sys.path.remove(str(DASHBOARDS))
    for name, build in generate.DASHBOARDS.items():
        (tmp_path / name).write_text(generate.render(build), encoding="utf-8")
    original = generate.OUT
    generate.OUT = tmp_path
    try:
        assert generate.main(["--check"]) == 0
        edited = tmp_path / "yard.json"
        edited.write_text(edited.read_text().replace("Humedad", "Humidity", 1))
        assert generate.main(["--check"]) == 1
    finally:
        generate.OUT = original


def test_provisioning_points_at_the_folder_and_the_datasource() -> None:
    provider = (DASHBOARDS / "provisioning" / "dashboards" / "secadero.yaml").read_text()
    assert "path: /var/lib/grafana/dashboards/secadero" in provider
    datasource = (DASHBOARDS / "provisioning" / "datasources" / "secadero.yaml").read_text()
    assert "type: influxdb" in datasource and "dbName: secadero" in datasource
    assert provisioned_datasource_uid() == "secadero-influx"
