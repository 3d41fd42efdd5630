"""Messages name the places people know: a yard with areas (issue 13).

The yard's layout (``[[yards.areas]]``): node n1 and its trays t1, t2 are the
sector Norte, node n2 and its tray t3 the sector Sur. The scenarios run on the
simulated clock (``alert_helpers.SimYard``: the real engine, SQLite store and
dispatcher; Twilio and ntfy are fakes that record what they were given).
Recipients: Rosa (worker, SMS), Luis (worker, push), Ana (supervisor, SMS),
Carmen (quality, SMS, English).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from alert_helpers import YARD, SimYard

from secadero.server import gsm7
from secadero.server.alerts import messages
from secadero.settings import AreaSettings

CHAZUTA = replace(YARD, name="Chazuta", areas=(
    AreaSettings(name="Norte", nodes=("n1",)),
    AreaSettings(name="Sur", nodes=("n2",)),
))


def bodies_by_time(yard: SimYard) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for (when, name, _, _, _), body in zip(yard.sent, yard.bodies, strict=True):
        found.setdefault((when, "en" if name == "Carmen" else "es"), body)
    return found


def test_the_rain_and_the_escalation_name_the_sector_sur(tmp_path: Path) -> None:
    # A shower forecast for 15:00 and 16:00; the south tray stays out all afternoon.
    yard = SimYard(tmp_path, yard_settings=CHAZUTA)
    yard.prob_by_hour = {15: 80, 16: 80}
    yard.at("07:00", lambda: yard.nodes["n2"].trays.update(t3="extended"))
    yard.at("15:12", yard.rain("n2", True))
    yard.run("16:30")
    assert [(when, kind, event) for when, name, _, kind, event in yard.sent
            if name == "Rosa"] == [
        ("13:31", "rain_forecast", "raise"),
        ("13:46", "rain_forecast", "repeat"),
        ("14:01", "rain_forecast", "repeat"),
        ("14:16", "rain_forecast", "repeat"),
        ("14:50", "trays_still_out", "escalate"),
        ("15:05", "trays_still_out", "escalate"),
        ("15:12", "rain_now", "upgrade"),
        ("15:27", "trays_still_out", "escalate"),
        ("15:57", "trays_reminder", "reminder"),
        ("16:27", "trays_reminder", "reminder"),
    ]
    by_time = bodies_by_time(yard)
    assert by_time["13:31", "es"] == ("Lluvia en ~90 min (80%) hacia las 15:00. Recoger las "
                                      "bandejas del sector Sur, tendal Chazuta. Responda OK.")
    assert by_time["14:01", "en"] == ("REMINDER: Rain in ~60 min (80%) around 15:00. Pull in "
                                      "the trays in area Sur, yard Chazuta. Reply OK.")
    assert by_time["14:50", "es"] == ("URGENTE: siguen afuera bandejas del sector Sur, tendal "
                                      "Chazuta. Lluvia hacia las 15:00. Recogerlas ya y "
                                      "responder OK.")
    assert by_time["14:50", "en"] == ("URGENT: trays still out in area Sur, yard Chazuta. "
                                      "Rain around 15:00. Pull them in now and reply OK.")
    assert by_time["15:12", "es"] == ("LLUEVE en el tendal Chazuta (sensor del sector Sur) "
                                      "desde las 15:12. Recoger las bandejas YA. Responda OK.")
    assert by_time["15:12", "en"] == ("RAINING at yard Chazuta (sensor in area Sur) since "
                                      "15:12. Pull in the trays NOW. Reply OK.")
    assert by_time["15:27", "es"] == ("URGENTE: siguen afuera bandejas del sector Sur, tendal "
                                      "Chazuta. Lluvia ya. Recogerlas ya y responder OK.")
    assert by_time["15:57", "es"] == ("RECORDATORIO: sin confirmar adentro bandejas del sector "
                                      "Sur, tendal Chazuta. Lluvia ya. Recogerlas y responder "
                                      "OK.")
    assert by_time["15:57", "en"] == ("REMINDER: trays in area Sur not confirmed in, yard "
                                      "Chazuta. Rain now. Pull them in and reply OK.")
    for body in yard.bodies:
        assert "n2" not in body
        assert gsm7.is_gsm7(body) and gsm7.septets(body) <= gsm7.SINGLE_SEGMENT


def test_trays_out_in_two_areas_name_both_in_the_file_order(tmp_path: Path) -> None:
    yard = SimYard(tmp_path, yard_settings=CHAZUTA)
    yard.prob_by_hour = {15: 80}
    yard.at("07:00", lambda: (yard.nodes["n2"].trays.update(t3="extended"),
                              yard.nodes["n1"].trays.update(t2="extended")))
    yard.run("14:50")
    by_time = bodies_by_time(yard)
    # The quality role (English) hears from the second repeat up the chain.
    assert by_time["14:01", "en"] == ("REMINDER: Rain in ~60 min (80%) around 15:00. Pull in "
                                      "the trays in areas Norte and Sur, yard Chazuta. "
                                      "Reply OK.")
    assert by_time["14:50", "es"] == ("URGENTE: siguen afuera bandejas de los sectores Norte "
                                      "y Sur, tendal Chazuta. Lluvia hacia las 15:00. "
                                      "Recogerlas ya y responder OK.")
    for body in yard.bodies:
        assert gsm7.is_gsm7(body) and gsm7.septets(body) <= gsm7.SINGLE_SEGMENT


def test_a_tray_in_no_area_keeps_its_id(tmp_path: Path) -> None:
    # Only n1 is laid out: n2's tray is named by its id, never left out of the message.
    only_norte = replace(YARD, name="Chazuta", areas=(AreaSettings(name="Norte",
                                                                   nodes=("n1",)),))
    yard = SimYard(tmp_path, yard_settings=only_norte)
    yard.prob_by_hour = {15: 80}
    yard.at("07:00", lambda: (yard.nodes["n2"].trays.update(t3="extended"),
                              yard.nodes["n1"].trays.update(t1="extended")))
    yard.run("14:50")
    assert bodies_by_time(yard)["14:50", "es"] == (
        "URGENTE: siguen afuera bandejas de los sectores Norte y n2/t3, tendal Chazuta. "
        "Lluvia hacia las 15:00. Recogerlas ya y responder OK.")


LONG_AREAS = ["Sector Norte junto al almacen de la cooperativa", "Sector Sur del rio Huallaga",
              "Patio central de fermentacion"]


@pytest.mark.parametrize("kind", sorted(messages.AREA_TEMPLATES))
@pytest.mark.parametrize("language", ["es", "en"])
@pytest.mark.parametrize("repeat", [False, True])
def test_area_messages_fit_one_gsm7_segment_even_with_long_names(
        kind: str, language: str, repeat: bool) -> None:
    fields = {"yard": "Tendal Cooperativa Agraria Cacaotera Acopagro Chazuta Numero Tres",
              "when_es": "en ~90 min", "when_en": "in ~90 min", "rain_es": "hacia las 14:20",
              "rain_en": "around 14:20", "amount": "100%", "start": "14:20",
              "nodes": "n1", "trays": "n1/t1"}
    for field in ("areas", "wet"):
        for lang in ("es", "en"):
            fields[f"{field}_{lang}"] = messages.areas_phrase(LONG_AREAS, lang)
    text = messages.render(kind, language, fields, repeat=repeat)
    assert gsm7.is_gsm7(text.body), text.body
    assert gsm7.septets(text.body) <= gsm7.SINGLE_SEGMENT, text.body
    # The area template, shortened to fit: not the plain one with ids.
    assert "n1" not in text.body and "..." in text.body, text.body


def test_areas_phrase() -> None:
    assert messages.areas_phrase([], "es") == ""
    assert messages.areas_phrase(["Sur"], "es") == "del sector Sur"
    assert messages.areas_phrase(["Norte", "Centro", "Sur"], "es") == (
        "de los sectores Norte, Centro y Sur")
    assert messages.areas_phrase(["Norte", "Sur"], "en") == "in areas Norte and Sur"
