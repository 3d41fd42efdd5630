"""Generates the Grafana dashboards in dashboards/json/ (run it after editing this file).

    .venv/bin/python dashboards/generate.py          # write the files
    .venv/bin/python dashboards/generate.py --check  # exit 1 if a file differs

Plain Python building the classic (v1) dashboard JSON, not the Foundation SDK:
the SDK is in public preview with an API that moves between builds, has no
InfluxQL query type (its issue #447), and would be a dependency for one
script. What the SDK would have guaranteed, that the JSON fits Grafana's
own types, ``tests/test_dashboards_schema.py`` checks against a JSON Schema
derived from Grafana's published types (dashboards/schema/derive.sh), and
every query runs against a real InfluxDB in ``tests/test_dashboards.py``.

Every panel and variable uses the one provisioned datasource (uid
``secadero-influx``, InfluxQL: InfluxDB 1.x, and 2.x/3.x through their 1.x
API). Dashboard uids are fixed here: links and the kiosk URL depend on them.
Texts are Spanish first, English second where there is room.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "json"
DATASOURCE = {"type": "influxdb", "uid": "secadero-influx"}
SCHEMA_VERSION = 42  # what Grafana 12 writes; the schema test pins the field's type
YARD = '"yard" =~ /^$yard$/'
NODE = '"node" =~ /^$node$/'
TIMEZONE = "America/Lima"
# The wall shows the latest alert even when it was raised before the 6 h on screen:
# an episode can last a whole rainy afternoon.
ALERT_WINDOW = "time > now() - 7d"
NODE_WINDOW = "time > now() - 7d"


# --------------------------------------------------------------------------
# small builders


def query(text: str, *, ref: str = "A", fmt: str = "time_series", alias: str | None = None
          ) -> dict[str, Any]:
    """An InfluxQL target in raw mode, as Grafana's InfluxDB datasource stores it."""
    target: dict[str, Any] = {"refId": ref, "datasource": DATASOURCE, "rawQuery": True,
                              "resultFormat": fmt, "query": text}
    if alias is not None:
        target["alias"] = alias
    return target


def grid(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"x": x, "y": y, "w": w, "h": h}


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": value, "color": color}
                                          for value, color in steps]}


def mapping(options: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """Value -> (text, colour): the word and the colour both say it (not colour alone)."""
    return [{"type": "value", "options": {
        value: {"text": text, "color": color, "index": index}
        for index, (value, (text, color)) in enumerate(options.items())}}]


def panel(kind: str, title: str, description: str, position: dict[str, int],
          targets: list[dict[str, Any]], *, unit: str | None = None,
          decimals: int | None = None, mappings: list[dict[str, Any]] | None = None,
          steps: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
          custom: dict[str, Any] | None = None, overrides: list[dict[str, Any]] | None = None,
          color: dict[str, Any] | None = None, no_value: str | None = None) -> dict[str, Any]:
    """A panel; ``no_value`` is shown instead of "No data" where nothing is the normal case
    (no sequence gap, no sensor fault in the period)."""
    given = {"noValue": no_value, "unit": unit, "decimals": decimals, "mappings": mappings,
             "thresholds": steps, "custom": custom, "color": color}
    defaults = {key: value for key, value in given.items() if value is not None}
    return {"type": kind, "title": title, "description": description,
            "datasource": DATASOURCE, "gridPos": position, "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {}}


def stat_options(*, value_size: int, title_size: int, text_mode: str = "value_and_name",
                 color_mode: str = "background", fields: str = "") -> dict[str, Any]:
    return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": fields, "values": False},
            "textMode": text_mode, "colorMode": color_mode, "graphMode": "none",
            "justifyMode": "center", "orientation": "auto", "wideLayout": True,
            "text": {"valueSize": value_size, "titleSize": title_size}}


def timeseries_options() -> dict[str, Any]:
    return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True,
                       "calcs": []},
            "tooltip": {"mode": "multi", "sort": "none"}}


def variable(name: str, label: str, text: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": text, "refresh": 1, "includeAll": False, "multi": False, "sort": 1,
            "options": []}


def node_variable() -> dict[str, Any]:
    node = variable("node", "Nodo",
                    f'SHOW TAG VALUES FROM "node" WITH KEY = "node" WHERE {YARD}')
    node.update(includeAll=True, multi=True, allValue=".*",
                current={"text": ["All"], "value": ["$__all"]})
    return node


def annotation(name: str, colour: str, text: str) -> dict[str, Any]:
    """An InfluxQL annotation: one mark per row, its ``text`` column as the label."""
    return {"name": name, "datasource": DATASOURCE, "enable": True, "iconColor": colour,
            "target": {"refId": "Anno", "rawQuery": True, "query": text}}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]], *,
              variables: list[dict[str, Any]], time_from: str, time_to: str = "now",
              refresh: str = "1m", annotations: list[dict[str, Any]] | None = None,
              tags: tuple[str, ...] = ()) -> dict[str, Any]:
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["secadero", *tags], "timezone": TIMEZONE, "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False,
        "graphTooltip": 1, "liveNow": False, "fiscalYearStartMonth": 0, "weekStart": "",
        "time": {"from": time_from, "to": time_to},
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m"]},
        "templating": {"list": variables},
        "annotations": {"list": annotations or []},
        "links": [], "panels": panels,
    }


# --------------------------------------------------------------------------
# the four dashboards


def wall() -> dict[str, Any]:
    """The yard office's screen, read from across the room (kiosk)."""
    big, title = 72, 28
    panels = [
        panel("stat", "Alerta / Alert",
              "La alerta más reciente del tendal, en su propio texto (el mismo que recibió el "
              "personal). Si sigue activa lo dice la ficha de la derecha (ALERTA en rojo).",
              grid(0, 0, 18, 5),
              [query(f'SELECT last("message") AS "mensaje", last("state") AS "estado" '
                     f'FROM "alert" WHERE {YARD} AND {ALERT_WINDOW}', fmt="table")],
              # Neutral: the text may be the all-clear; the state tile beside it is the colour.
              options=stat_options(value_size=40, title_size=title, text_mode="value",
                                   fields="/^mensaje$/", color_mode="none"),
              no_value="Sin alertas / No alerts"),
        panel("stat", "Estado de alerta",
              "ALERTA (rojo) mientras la alerta del tendal está levantada; RECIBIDA (naranja) "
              "cuando alguien respondió OK o las bandejas entraron, y sigue vigente; SIN "
              "ALERTA (verde) cuando terminó.",
              grid(18, 0, 6, 5),
              [query(f'SELECT last("state") AS "estado" FROM "alert" WHERE {YARD} '
                     f'AND {ALERT_WINDOW}', fmt="table")],
              mappings=mapping({"raised": ("ALERTA", "red"), "acknowledged": ("RECIBIDA", "orange"),
                                "resolved": ("SIN ALERTA", "green")}),
              no_value="SIN ALERTA",
              options=stat_options(value_size=big, title_size=title, text_mode="value")),
        panel("stat", "Bandejas / Trays",
              "Una ficha por bandeja: AFUERA (amarillo, al sol) o ADENTRO (azul, bajo techo), "
              "según los finales de carrera del nodo.",
              grid(0, 5, 24, 7),
              [query(f'SELECT last("extended") FROM "tray" WHERE {YARD} AND $timeFilter '
                     f'GROUP BY "tray", "node"', alias="$tag_tray")],
              mappings=mapping({"1": ("AFUERA", "yellow"), "0": ("ADENTRO", "blue")}),
              options=stat_options(value_size=big, title_size=title)),
        panel("stat", "Lluvia ahora / Rain now",
              "La placa de lluvia de cada nodo: LLUEVE en rojo = está lloviendo en el tendal.",
              grid(0, 12, 8, 7),
              [query(f'SELECT last("wet") FROM "rain" WHERE {YARD} AND $timeFilter '
                     f'GROUP BY "node"', alias="$tag_node")],
              mappings=mapping({"true": ("LLUEVE", "red"), "false": ("SECO", "green")}),
              options=stat_options(value_size=big, title_size=title)),
        panel("stat", "Lluvia próximas 3 h",
              "La mayor probabilidad de lluvia del pronóstico en la hora en curso y las tres "
              "siguientes.",
              grid(8, 12, 6, 7),
              # Forecast points carry their hour's start: "> now() - 1h" keeps the hour in course.
              [query(f'SELECT max("precip_prob_pct") FROM "forecast" WHERE {YARD} '
                     f'AND time > now() - 1h AND time <= now() + 3h')],
              unit="percent", decimals=0,
              steps=thresholds((None, "green"), (40, "yellow"), (70, "red")),
              options=stat_options(value_size=big, title_size=title, text_mode="value")),
        panel("barchart", "Pronóstico por hora / Forecast",
              "Probabilidad de lluvia de cada una de las próximas horas (pronóstico del "
              "tendal). Barras altas y rojas: lluvia probable.",
              grid(14, 12, 10, 7),
              [query(f'SELECT max("precip_prob_pct") AS "prob" FROM "forecast" WHERE {YARD} '
                     f'AND time >= now() - 1h AND time <= now() + 6h GROUP BY time(1h) '
                     f'fill(none)', alias="Probabilidad")],
              unit="percent", decimals=0,
              steps=thresholds((None, "green"), (40, "yellow"), (70, "red")),
              color={"mode": "thresholds"},
              options={"xTickLabelRotation": 0, "showValue": "always", "barWidth": 0.8,
                       "groupWidth": 0.9, "orientation": "vertical", "stacking": "none",
                       "legend": {"showLegend": False, "displayMode": "list",
                                  "placement": "bottom", "calcs": []},
                       "tooltip": {"mode": "single", "sort": "none"},
                       "text": {"valueSize": 28}, "xTickLabelSpacing": 0}),
        panel("stat", "Nodos / Nodes",
              "EN LÍNEA (verde) o SIN SEÑAL (rojo): el servidor marca un nodo sin señal cuando "
              "calla más de lo permitido o su conexión se cae.",
              grid(0, 19, 24, 5),
              # 7 days, not the 6 h on screen: a node that died this morning must stay
              # on the wall as SIN SEÑAL, not vanish from it.
              [query(f'SELECT last("online") FROM "node" WHERE {YARD} AND {NODE_WINDOW} '
                     f'GROUP BY "node"', alias="$tag_node")],
              mappings=mapping({"1": ("EN LÍNEA", "green"), "0": ("SIN SEÑAL", "red")}),
              options=stat_options(value_size=48, title_size=title)),
    ]
    return dashboard("secadero-wall", "Pantalla del tendal",
                     "Modo kiosko para la oficina del tendal: bandejas, lluvia, pronóstico, "
                     "alerta y nodos, legibles a 5 m. Se actualiza sola cada 30 s.",
                     panels, variables=[yard_variable()], time_from="now-6h",
                     time_to="now+6h", refresh="30s", tags=("kiosk",))


def yard_variable() -> dict[str, Any]:
    return variable("yard", "Tendal", 'SHOW TAG VALUES FROM "climate" WITH KEY = "yard"')


def climate_series(field: str) -> dict[str, Any]:
    return query(f'SELECT mean("{field}") FROM "climate" WHERE {YARD} AND $timeFilter '
                 f'GROUP BY time($__interval), "node" fill(none)', alias="$tag_node")


def yard() -> dict[str, Any]:
    """The yard's climate and rain, per node, with the forecast against the gauges."""
    line = {"lineWidth": 2, "fillOpacity": 0, "showPoints": "never", "spanNulls": False}
    panels = [
        panel("timeseries", "Humedad relativa / Humidity",
              "Humedad de cada nodo (ya corregida por la calibración con sales si el nodo la "
              "tiene). Sobre 85 % el cacao deja de secar y puede enmohecerse.",
              grid(0, 0, 12, 9), [climate_series("humidity_pct")], unit="percent",
              decimals=1, custom=line, options=timeseries_options()),
        panel("timeseries", "Temperatura / Temperature",
              "Temperatura del aire junto a las bandejas, por nodo.",
              grid(12, 0, 12, 9), [climate_series("temperature_c")], unit="celsius",
              decimals=1, custom=line, options=timeseries_options()),
        panel("timeseries", "Déficit de presión de vapor (VPD)",
              "Cuánto puede secar el aire: más VPD, secado más rápido; bajo 0.5 kPa casi no "
              "seca.", grid(0, 9, 12, 8), [climate_series("vpd_kpa")], unit="pressurekpa",
              decimals=2, custom=line, options=timeseries_options()),
        panel("timeseries", "Lluvia medida / Rain measured",
              "Lluvia de los pluviómetros de cada nodo, sumada por intervalo.",
              grid(12, 9, 12, 8),
              [query(f'SELECT sum("rain_mm") FROM "rain" WHERE {YARD} AND $timeFilter '
                     f'GROUP BY time($__interval), "node" fill(none)', alias="$tag_node")],
              unit="lengthmm", decimals=1,
              custom={"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1},
              options=timeseries_options()),
        panel("timeseries", "Pronóstico contra lluvia medida",
              "Probabilidad de lluvia pronosticada por hora (línea, eje izquierdo) frente a "
              "la lluvia que midieron los pluviómetros en esa hora (barras, eje derecho): "
              "muestra si el pronóstico acierta en este tendal.",
              grid(0, 17, 24, 9),
              [query(f'SELECT max("precip_prob_pct") FROM "forecast" WHERE {YARD} AND '
                     f'$timeFilter GROUP BY time(1h) fill(none)', alias="Probabilidad"),
               query(f'SELECT sum("rain_mm") FROM "rain" WHERE {YARD} AND $timeFilter '
                     f'GROUP BY time(1h) fill(none)', ref="B", alias="Lluvia medida")],
              unit="percent", custom=line, options=timeseries_options(),
              overrides=[{"matcher": {"id": "byName", "options": "Lluvia medida"},
                          "properties": [{"id": "unit", "value": "lengthmm"},
                                         {"id": "custom.axisPlacement", "value": "right"},
                                         {"id": "custom.drawStyle", "value": "bars"},
                                         {"id": "custom.fillOpacity", "value": 70}]}]),
    ]
    return dashboard("secadero-yard", "Tendal: clima y lluvia",
                     "Humedad, temperatura y VPD por nodo; lluvia; pronóstico frente a lluvia "
                     "medida.", panels, variables=[yard_variable()], time_from="now-24h",
                     time_to="now+6h")


def batch() -> dict[str, Any]:
    """One drying batch: its curves with the events that explain them, and its numbers."""
    batch_filter = '"batch" =~ /^$batch$/'
    line = {"lineWidth": 2, "fillOpacity": 0, "showPoints": "never"}
    panels = [
        panel("timeseries", "Humedad y temperatura del tendal",
              "Las curvas del tendal durante el lote, con las marcas de lluvia, bandejas, "
              "alertas y mediciones de humedad del grano (arriba, en colores).",
              grid(0, 0, 24, 10),
              [query(f'SELECT mean("humidity_pct") FROM "climate" WHERE {YARD} AND '
                     f'$timeFilter GROUP BY time($__interval) fill(none)', alias="Humedad %"),
               query(f'SELECT mean("temperature_c") FROM "climate" WHERE {YARD} AND '
                     f'$timeFilter GROUP BY time($__interval) fill(none)', ref="B",
                     alias="Temperatura °C")],
              custom=line, options=timeseries_options(),
              overrides=[{"matcher": {"id": "byName", "options": "Temperatura °C"},
                          "properties": [{"id": "unit", "value": "celsius"},
                                         {"id": "custom.axisPlacement", "value": "right"}]}]),
        panel("timeseries", "Humedad del grano / Bean moisture",
              "Cada medición de humedad del grano registrada para el lote (secadero batch "
              "moisture). El cacao está seco a 7 % o menos.",
              grid(0, 10, 12, 8),
              [query(f'SELECT "moisture_pct" FROM "batch" WHERE {YARD} AND {batch_filter} '
                     f'AND $timeFilter', alias="Humedad del grano")],
              unit="percent", decimals=1,
              custom={"drawStyle": "line", "showPoints": "always", "pointSize": 8,
                      "lineWidth": 2}, options=timeseries_options(),
              steps=thresholds((None, "green"), (7.5, "red"))),
        panel("timeseries", "Bandejas afuera / Trays out",
              "Cuántas bandejas del tendal estaban afuera (al sol) en cada momento.",
              grid(12, 10, 12, 8),
              [query(f'SELECT sum("extended") FROM (SELECT last("extended") AS "extended" '
                     f'FROM "tray" WHERE {YARD} AND $timeFilter GROUP BY time($__interval), '
                     f'"tray", "node" fill(previous)) GROUP BY time($__interval) fill(none)',
                     alias="Bandejas afuera")],
              decimals=0, custom={"drawStyle": "line", "lineInterpolation": "stepAfter",
                                  "fillOpacity": 30, "lineWidth": 1},
              options=timeseries_options()),
        panel("stat", "Última humedad del grano",
              "La medición más reciente de humedad del grano de este lote.",
              grid(0, 18, 6, 5),
              [query(f'SELECT last("moisture_pct") FROM "batch" WHERE {YARD} AND '
                     f'{batch_filter} AND $timeFilter')],
              unit="percent", decimals=1, steps=thresholds((None, "green"), (7.5, "orange")),
              options=stat_options(value_size=48, title_size=16, text_mode="value")),
        panel("stat", "Mediciones de humedad",
              "Cuántas veces se midió la humedad del grano de este lote.",
              grid(6, 18, 6, 5),
              [query(f'SELECT count("moisture_pct") FROM "batch" WHERE {YARD} AND '
                     f'{batch_filter} AND $timeFilter')],
              decimals=0, options=stat_options(value_size=48, title_size=16,
                                               text_mode="value", color_mode="none")),
        panel("stat", "Lluvia en el periodo",
              "Lluvia total medida en el tendal en el periodo mostrado (mm, el mayor de los "
              "pluviómetros).",
              grid(12, 18, 6, 5),
              [query(f'SELECT max("total") FROM (SELECT sum("rain_mm") AS "total" FROM "rain" '
                     f'WHERE {YARD} AND $timeFilter GROUP BY "node")')],
              unit="lengthmm", decimals=1,
              options=stat_options(value_size=48, title_size=16, text_mode="value",
                                   color_mode="none")),
        panel("stat", "Alertas en el periodo",
              "Cuántas alertas de lluvia se levantaron en el tendal en el periodo mostrado.",
              grid(18, 18, 6, 5),
              [query(f'SELECT count("state") FROM "alert" WHERE {YARD} AND "state" = '
                     f"'raised' AND $timeFilter")],
              decimals=0, no_value="0", options=stat_options(value_size=48, title_size=16,
                                               text_mode="value", color_mode="none")),
    ]
    annotations = [
        annotation("Lote", "purple",
                   f'SELECT "event" AS "text", "moisture_pct" FROM "batch" WHERE {YARD} AND '
                   f'{batch_filter} AND $timeFilter'),
        annotation("Lluvia", "blue",
                   f'SELECT "type" AS "text" FROM "event" WHERE {YARD} AND "type" =~ /^rain_/ '
                   f'AND $timeFilter'),
        annotation("Bandejas", "yellow",
                   f'SELECT "type" AS "text", "tray" FROM "event" WHERE {YARD} AND '
                   f'"type" =~ /^tray_/ AND $timeFilter'),
        annotation("Alertas", "red",
                   f'SELECT "message" AS "text", "state" FROM "alert" WHERE {YARD} AND '
                   f'$timeFilter'),
    ]
    batch_variable = variable("batch", "Lote",
                              f'SHOW TAG VALUES FROM "batch" WITH KEY = "batch" WHERE {YARD}')
    batch_variable["sort"] = 2  # newest batch ids (dated) first
    return dashboard("secadero-batch", "Revisión de lote / Batch review",
                     "Las curvas de un lote de secado con sus eventos (lluvia, bandejas, "
                     "alertas, humedad del grano) y sus números. Ajuste el periodo a las "
                     "fechas del lote (secadero batch show).",
                     panels, variables=[yard_variable(), batch_variable], time_from="now-7d",
                     refresh="5m", annotations=annotations)


def nodes() -> dict[str, Any]:
    """Which node needs a visit, and why."""
    def per_node(select: str, where: str = "") -> dict[str, Any]:
        extra = f" AND {where}" if where else ""
        return query(f'SELECT {select} FROM "node" WHERE {YARD} AND {NODE}{extra} AND '
                     f'$timeFilter GROUP BY "node"', alias="$tag_node")

    def stat_row(title: str, description: str, position: dict[str, int], target: dict[str, Any],
                 **kwargs: Any) -> dict[str, Any]:
        return panel("stat", title, description, position, [target],
                     options=stat_options(value_size=32, title_size=16), **kwargs)

    panels = [
        stat_row("Visto por última vez / Last seen",
                 "Hace cuánto llegó el último mensaje de estado de cada nodo (cada minuto "
                 "mientras está en línea). Más de 5 min: revisar la red o la energía.",
                 # uptime_s comes only in the node's own online status: the server's
                 # "silent" mark (online = 0, no uptime) is not the node being seen.
                 grid(0, 0, 12, 5), per_node('last("uptime_s") AS "visto"', '"online" = 1'),
                 unit="dateTimeFromNow", steps=thresholds((None, "green"))),
        stat_row("En línea", "EN LÍNEA o SIN SEÑAL según el último estado de cada nodo.",
                 grid(12, 0, 12, 5), per_node('last("online")'),
                 mappings=mapping({"1": ("EN LÍNEA", "green"), "0": ("SIN SEÑAL", "red")})),
        stat_row("Mensajes en espera / Buffered",
                 "Mensajes guardados en el nodo que el servidor aún no confirmó. Crece si el "
                 "nodo no llega al servidor.",
                 grid(0, 5, 8, 5), per_node('last("buffered")'), decimals=0,
                 steps=thresholds((None, "green"), (100, "yellow"), (5000, "red"))),
        stat_row("Mensajes perdidos (saltos de seq)",
                 "Números de secuencia que nunca llegaron en el periodo: lecturas perdidas "
                 "(outbox del nodo lleno).",
                 grid(8, 5, 8, 5), per_node('sum("seq_gap")'), decimals=0,
                 steps=thresholds((None, "green"), (1, "red")), no_value="0"),
        panel("stat", "Fallas de sensor / Sensor faults",
              "Cuántas veces el sensor de clima de cada nodo dejó de responder en el periodo.",
              grid(16, 5, 8, 5),
              [query(f'SELECT count("type") FROM "event" WHERE {YARD} AND {NODE} AND '
                     f"\"type\" = 'sensor_fault' AND $timeFilter GROUP BY \"node\"",
                     alias="$tag_node")],
              decimals=0, steps=thresholds((None, "green"), (1, "orange")), no_value="0",
              options=stat_options(value_size=32, title_size=16)),
        stat_row("Reloj / Clock",
                 "SINCRONIZADO o SIN HORA: un nodo sin hora confiable guarda sus lecturas y "
                 "no las envía hasta tenerla (NTP).",
                 grid(0, 10, 8, 5), per_node('last("clock_synced")'),
                 mappings=mapping({"1": ("SINCRONIZADO", "green"), "0": ("SIN HORA", "red")})),
        stat_row("Bajo voltaje / Under-voltage",
                 "Alimentación de la Raspberry Pi: BAJO VOLTAJE AHORA (rojo), HUBO BAJO VOLTAJE "
                 "desde el arranque (naranja), OK (verde). Fuente débil o cable largo: causa "
                 "común de tarjetas SD dañadas.",
                 grid(8, 10, 8, 5),
                 per_node('last("under_voltage") * 2 + last("under_voltage_seen") AS "v"'),
                 mappings=mapping({"0": ("OK", "green"), "1": ("HUBO BAJO VOLTAJE", "orange"),
                                   "2": ("BAJO VOLTAJE AHORA", "red"),
                                   "3": ("BAJO VOLTAJE AHORA", "red")})),
        stat_row("Limitación de CPU / Throttling",
                 "La Raspberry Pi redujo su velocidad por calor o voltaje: AHORA (rojo), "
                 "HUBO (naranja), NO (verde).",
                 grid(16, 10, 8, 5),
                 per_node('last("throttled_now") * 2 + last("throttled_seen") AS "t"'),
                 mappings=mapping({"0": ("NO", "green"), "1": ("HUBO", "orange"),
                                   "2": ("AHORA", "red"), "3": ("AHORA", "red")})),
        stat_row("Señal Wi-Fi", "Nivel de señal Wi-Fi del nodo. Bajo -75 dBm se pierden "
                 "mensajes: acercar el punto de acceso o poner una antena.",
                 grid(0, 15, 8, 5), per_node('last("wifi_rssi_dbm")'), unit="dBm",
                 decimals=0, steps=thresholds((None, "red"), (-75, "orange"), (-65, "green"))),
        stat_row("Disco libre / Disk free",
                 "Espacio libre donde el nodo guarda sus mensajes. Menos de 200 MB: limpiar la "
                 "tarjeta SD.",
                 grid(8, 15, 8, 5), per_node('last("disk_free_bytes")'), unit="bytes",
                 decimals=1,
                 steps=thresholds((None, "red"), (200e6, "orange"), (1e9, "green"))),
        stat_row("Encendido hace / Uptime",
                 "Tiempo desde que el agente del nodo arrancó. Reinicios frecuentes: energía.",
                 grid(16, 15, 8, 5), per_node('last("uptime_s")'), unit="s", decimals=0,
                 steps=thresholds((None, "green"))),
        stat_row("Última calibración / Last calibration",
                 "Cuándo se calibró el sensor de humedad del nodo con sales (secadero edge "
                 "calibrate). Más de 6 meses: calibrar de nuevo.",
                 grid(0, 20, 12, 5), per_node('last("calibrated_ts") * 1000 AS "calibrado"'),
                 unit="dateTimeFromNow", steps=thresholds((None, "green"))),
        panel("timeseries", "Señal Wi-Fi en el tiempo",
              "La señal de cada nodo en el periodo: caídas a la misma hora suelen ser "
              "interferencias o lluvia.", grid(12, 20, 12, 5),
              [query(f'SELECT mean("wifi_rssi_dbm") FROM "node" WHERE {YARD} AND {NODE} AND '
                     f'$timeFilter GROUP BY time($__interval), "node" fill(none)',
                     alias="$tag_node")],
              unit="dBm", options=timeseries_options(),
              custom={"lineWidth": 2, "showPoints": "never"}),
    ]
    # "Last seen" shows the time of the last status (its Time field), not its value.
    panels[0]["options"]["reduceOptions"]["fields"] = "/^Time$/"
    return dashboard("secadero-nodes", "Salud de los nodos / Node health",
                     "Qué nodo necesita una visita y por qué: señal, energía, reloj, disco, "
                     "sensor y calibración.", panels,
                     variables=[yard_variable(), node_variable()], time_from="now-24h")


DASHBOARDS = {"wall.json": wall, "yard.json": yard, "batch.json": batch, "nodes.json": nodes}


def render(build: Any) -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a file in json/ is not what this program writes")
    args = parser.parse_args(argv)
    differ = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                differ.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if differ:
        print("not as generated: " + ", ".join(differ), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
