"""The words of the batch report, in Spanish (first: the yard's language) and English.

One table per language with the same keys; ``texts(language)`` gives one, or a
``BatchError`` naming ``language`` for one we do not have. A test checks the
tables have the same keys, so a label added in one language is added in both.
"""

from __future__ import annotations

from collections.abc import Mapping

from secadero.server.batches.model import BatchError

SPANISH: Mapping[str, str] = {
    "title": "Informe de secado de cacao",
    "data_until": "Datos hasta {when} (hora local, {timezone})",
    # the lot's identity
    "batch": "Tanda",
    "lot": "Lote",
    "member": "Socio / proveedor",
    "yard": "Tendal",
    "trays": "Bandejas",
    "fermentation_end": "Fin de fermentación",
    "wet_weight": "Peso húmedo",
    "dry_weight": "Peso seco",
    "started": "Inicio",
    "ended": "Fin",
    "in_progress": "en curso",
    "final_moisture": "Humedad final",
    "notes": "Notas",
    # the panels
    "humidity_axis": "Humedad del aire (%)",
    "temperature_axis": "Temperatura (°C)",
    "rain_lane": "lluvia",
    "moisture_axis": "Humedad del grano (% b.h.)",
    "time_axis": "Hora local ({timezone})",
    "mean_of_nodes": "media de los nodos",
    "range_of_nodes": "mín–máx",
    "rain": "lluvia (placa mojada)",
    "gap": "sin datos",
    "alert": "alerta de lluvia",
    "tray_out": "bandeja fuera",
    "tray_unknown": "en movimiento / desconocido",
    "reading": "lectura del medidor",
    "target": "meta {target} %",
    "estimate_range": "estimado P20–P80",
    "estimate_median": "estimado P50",
    "no_climate": "Sin lecturas de clima en este periodo",
    "no_readings": "Sin lecturas de humedad del grano",
    # the metrics table
    "metrics": "Indicadores",
    "drying_h": "Horas de secado",
    "sun_drying_h": "Horas de sol con bandejas fuera",
    "rewetting_h": "Horas de re-humedecimiento",
    "rain_exposure": "Exposición a la lluvia",
    "humidity_summary": "Humedad del aire media (mín–máx)",
    "temperature_summary": "Temperatura media (mín–máx)",
    "vpd_mean": "DPV medio",
    "time_to_target": "Tiempo hasta la meta",
    "gaps": "Huecos en los datos",
    "gaps_value": "{count} ({hours} h)",
    "estimate": "Llega a {target} % (P50)",
    "estimate_range_row": "Rango del estimado (P20–P80)",
    "estimate_range_value": "{p20} – {p80}",
    "reached": "Llegó a {target} %",
    "no_estimate": "sin estimado: {reason}",
    "typical_day": "Día típico del patio",
    "typical_day_learnt": "{kpa_h} kPa·h, de sus últimos {days} días",
    "typical_day_built_in": "{kpa_h} kPa·h, valor de fábrica",
    # rain alerts
    "alerts": "Alertas de lluvia",
    "alerts_columns": "alerta → bandejas dentro · minutos",
    "alert_row": "A{episode}   {raised}  →  {retracted}",
    "not_retracted": "no se recogieron",
    "no_alerts": "Ninguna alerta durante la tanda",
    "more_alerts": "… y {count} más (ver CSV/JSON)",
    "none": "—",
}

ENGLISH: Mapping[str, str] = {
    "title": "Cocoa drying report",
    "data_until": "Data up to {when} (local time, {timezone})",
    "batch": "Batch",
    "lot": "Lot",
    "member": "Member / supplier",
    "yard": "Yard",
    "trays": "Trays",
    "fermentation_end": "Fermentation end",
    "wet_weight": "Wet weight",
    "dry_weight": "Dry weight",
    "started": "Start",
    "ended": "End",
    "in_progress": "in progress",
    "final_moisture": "Final moisture",
    "notes": "Notes",
    "humidity_axis": "Air humidity (%)",
    "temperature_axis": "Temperature (°C)",
    "rain_lane": "rain",
    "moisture_axis": "Bean moisture (% w.b.)",
    "time_axis": "Local time ({timezone})",
    "mean_of_nodes": "mean of the nodes",
    "range_of_nodes": "min–max",
    "rain": "rain (plate wet)",
    "gap": "no data",
    "alert": "rain alert",
    "tray_out": "tray out",
    "tray_unknown": "moving / unknown",
    "reading": "meter reading",
    "target": "target {target} %",
    "estimate_range": "estimate P20–P80",
    "estimate_median": "estimate P50",
    "no_climate": "No climate readings in this span",
    "no_readings": "No bean moisture readings",
    "metrics": "Figures",
    "drying_h": "Drying hours",
    "sun_drying_h": "Sun hours with trays out",
    "rewetting_h": "Rewetting hours",
    "rain_exposure": "Rain exposure",
    "humidity_summary": "Air humidity mean (min–max)",
    "temperature_summary": "Temperature mean (min–max)",
    "vpd_mean": "Mean VPD",
    "time_to_target": "Time to target",
    "gaps": "Gaps in the data",
    "gaps_value": "{count} ({hours} h)",
    "estimate": "Reaches {target} % (P50)",
    "estimate_range_row": "Estimate range (P20–P80)",
    "estimate_range_value": "{p20} – {p80}",
    "reached": "Reached {target} %",
    "no_estimate": "no estimate: {reason}",
    "typical_day": "The yard's typical day",
    "typical_day_learnt": "{kpa_h} kPa·h, from its last {days} days",
    "typical_day_built_in": "{kpa_h} kPa·h, built-in",
    "alerts": "Rain alerts",
    "alerts_columns": "alert → trays in · minutes",
    "alert_row": "A{episode}   {raised}  →  {retracted}",
    "not_retracted": "not brought in",
    "no_alerts": "No alert during the batch",
    "more_alerts": "… and {count} more (see CSV/JSON)",
    "none": "—",
}

WEEKDAYS: Mapping[str, tuple[str, ...]] = {
    "es": ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
}

LANGUAGES: Mapping[str, Mapping[str, str]] = {"es": SPANISH, "en": ENGLISH}


def texts(language: str) -> Mapping[str, str]:
    """The report's labels in ``language`` (``es`` or ``en``)."""
    try:
        return LANGUAGES[language]
    except KeyError:
        raise BatchError("language", f"no report texts for {language!r}; "
                                     f"use one of {', '.join(LANGUAGES)}") from None
