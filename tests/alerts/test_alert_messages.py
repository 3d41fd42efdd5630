"""Messages: Spanish and English, each within one GSM-7 SMS segment."""

from __future__ import annotations

import pytest

from secadero.server import gsm7
from secadero.server.alerts import messages

LONG = {
    "yard": "Tendal Cooperativa Agraria Cacaotera Acopagro Chazuta Número Tres",
    "when_es": "en ~90 min", "when_en": "in ~90 min",
    "rain_es": "hacia las 14:20", "rain_en": "around 14:20", "amount": "100%", "start": "14:20",
    "nodes": "nodo-norte-01, nodo-norte-02, nodo-norte-03",
    "trays": ", ".join(f"nodo-norte-{i:02d}/bandeja-{j}" for i in range(4) for j in range(3)),
    "hours": "2", "humidity": "97", "node": "nodo-norte-01-con-un-nombre-largo",
    "error": "HTTPSConnectionPool(host='api.open-meteo.com', port=443): Max retries exceeded",
    "provider": "open-meteo",
    # the batch quality warnings
    "batch": "lote-2026-06-acopagro-chazuta-017", "days": "12", "target": "8",
    "moisture": "4.5", "limit": "5", "moisture_es": "ultima lectura 19.5%",
    "moisture_en": "last reading 19.5%",
}


@pytest.mark.parametrize("kind", sorted(messages.TEMPLATES))
@pytest.mark.parametrize("language", ["es", "en"])
@pytest.mark.parametrize("repeat", [False, True])
def test_every_message_fits_one_gsm7_segment_even_with_long_names(
        kind: str, language: str, repeat: bool) -> None:
    text = messages.render(kind, language, LONG, repeat=repeat)
    assert gsm7.is_gsm7(text.body), text.body
    assert gsm7.septets(text.body) <= 160, (len(text.body), text.body)
    full = ((messages.REPEAT_PREFIX[language] if repeat else "")
            + messages.TEMPLATES[kind][language]).format_map(
        {k: gsm7.fold(v) for k, v in LONG.items()})
    if gsm7.septets(full) > 160:
        assert "..." in text.body  # shortened, not cut off at random
    else:
        assert text.body == full


def test_templates_avoid_the_accents_that_force_ucs2() -> None:
    for kind, by_language in messages.TEMPLATES.items():
        for language, template in by_language.items():
            assert gsm7.is_gsm7(template), (kind, language)


def test_a_yard_name_with_accents_is_folded_not_sent_as_ucs2() -> None:
    text = messages.render("rain_now", "es", {"yard": "Alegría", "nodes": "n1",
                                              "start": "14:05"})
    assert text.body == ("LLUEVE en el tendal Alegria (sensor n1) desde las 14:05. Recoger las "
                         "bandejas YA. Responda OK.")


def test_spanish_example_from_the_design() -> None:
    text = messages.render("rain_forecast", "es", {
        "yard": "Norte", "when_es": messages.when_phrase(41, "es"), "amount": "80%",
        "start": "14:20"})
    assert text.body == ("Lluvia en ~40 min (80%) hacia las 14:20. Recoger las bandejas del "
                         "tendal Norte. Responda OK.")
    assert text.title == "Lluvia prevista"


@pytest.mark.parametrize(("lead", "es", "en"), [
    (0, "ya", "now"), (2.9, "ya", "now"), (3, "en ~5 min", "in ~5 min"),
    (41, "en ~40 min", "in ~40 min"), (88, "en ~90 min", "in ~90 min")])
def test_when_phrase(lead: float, es: str, en: str) -> None:
    assert (messages.when_phrase(lead, "es"), messages.when_phrase(lead, "en")) == (es, en)


def test_gsm7_table() -> None:
    assert gsm7.is_gsm7("ñÑéÉüÜà¿¡") and not any(gsm7.is_gsm7(c) for c in "áíóúÁÍÓÚç")
    assert gsm7.septets("a€[") == 5  # extension characters cost two septets
    assert gsm7.fold("Está lloviendo: ¡recoger ya!") == "Esta lloviendo: ¡recoger ya!"
    assert gsm7.fold("Ω☂") == "Ω?"
    assert gsm7.fits_one_segment("x" * 160) and not gsm7.fits_one_segment("x" * 161)
    assert not gsm7.fits_one_segment("á")
