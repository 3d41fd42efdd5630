"""The words the workers read: one message per alert, Spanish first, English second.

Every SMS text fits one GSM-7 segment (160 septets). The templates are
written without á í ó ú (which would force UCS-2 and a 70-character limit);
names from the config are folded to GSM-7 and shortened if the text would
not fit. ``tests/alerts/test_messages.py`` renders every template with long
names and checks the limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import Final

from secadero.server import gsm7

# {field} placeholders. Fields listed in _FLEXIBLE may be shortened to fit one segment.
TEMPLATES: Final[Mapping[str, Mapping[str, str]]] = {
    "rain_forecast": {
        "es": "Lluvia {when_es} ({amount}) hacia las {start}. Recoger las bandejas del "
              "tendal {yard}. Responda OK.",
        "en": "Rain {when_en} ({amount}) around {start}. Pull in the trays at yard {yard}. "
              "Reply OK.",
    },
    "rain_now": {
        "es": "LLUEVE en el tendal {yard} (sensor {nodes}) desde las {start}. Recoger las "
              "bandejas YA. Responda OK.",
        "en": "RAINING at yard {yard} (sensor {nodes}) since {start}. Pull in the trays NOW. "
              "Reply OK.",
    },
    "trays_still_out": {
        "es": "URGENTE: siguen afuera bandejas del tendal {yard}: {trays}. Lluvia {rain_es}. "
              "Recogerlas ya y responder OK.",
        "en": "URGENT: trays still out at yard {yard}: {trays}. Rain {rain_en}. Pull them in "
              "now and reply OK.",
    },
    # The slower reminder after the ladder: trays not yet confirmed in by a switch.
    "trays_reminder": {
        "es": "RECORDATORIO: sin confirmar adentro bandejas del tendal {yard}: {trays}. "
              "Lluvia {rain_es}. Recogerlas y responder OK.",
        "en": "REMINDER: trays not confirmed in at yard {yard}: {trays}. Rain {rain_en}. "
              "Pull them in and reply OK.",
    },
    # To the technician, once per rain episode: a switch that cannot say in or out.
    "trays_unknown": {
        "es": "Técnico: el sensor de bandeja {trays} del tendal {yard} dice 'unknown'. "
              "No cuenta como adentro. Revisar el interruptor.",
        "en": "Technician: tray switch {trays} at yard {yard} reads 'unknown'. Not counted "
              "as in. Check the switch.",
    },
    "all_clear": {
        "es": "Tendal {yard}: sin lluvia prevista en {hours} h y sensores secos. Ya pueden "
              "sacar las bandejas.",
        "en": "Yard {yard}: no rain expected for {hours} h and sensors dry. The trays can go "
              "out again.",
    },
    "humidity_surge": {
        "es": "Tendal {yard}: la humedad sube rapido ({humidity}%). Posible lluvia: tener "
              "listas las bandejas.",
        "en": "Yard {yard}: humidity rising fast ({humidity}%). Rain possible: be ready to "
              "pull in the trays.",
    },
    "node_offline": {
        "es": "Técnico: el nodo {node} del tendal {yard} no responde desde las {start}. "
              "Revisar corriente y Wi-Fi.",
        "en": "Technician: node {node} at yard {yard} silent since {start}. Check power and "
              "Wi-Fi.",
    },
    "node_back": {
        "es": "Técnico: el nodo {node} del tendal {yard} responde de nuevo ({start}).",
        "en": "Technician: node {node} at yard {yard} is back ({start}).",
    },
    "forecast_stale": {
        "es": "Técnico: sin pronostico del tiempo para {yard} desde las {start} ({error}). "
              "Alertas de lluvia solo por sensores.",
        "en": "Technician: no weather forecast for {yard} since {start} ({error}). Rain "
              "alerts from the sensors only.",
    },
    "forecast_back": {
        "es": "Técnico: el pronostico del tiempo para {yard} funciona de nuevo ({provider}).",
        "en": "Technician: the weather forecast for {yard} works again ({provider}).",
    },
    "delivery_failed": {
        "es": "Técnico: no salen mensajes de alerta del tendal {yard} ({error}). Revisar "
              "internet, saldo y modem.",
        "en": "Technician: alert messages for yard {yard} are failing ({error}). Check the "
              "internet, credit and the modem.",
    },
    "delivery_back": {
        "es": "Técnico: los mensajes de alerta del tendal {yard} salen de nuevo.",
        "en": "Technician: alert messages for yard {yard} go out again.",
    },
    # One forecast provider failing while another may cover for it; the GSM modem.
    "provider_failing": {
        "es": "Técnico: el proveedor de pronostico {provider} falla para {yard} desde las "
              "{start} ({error}). Revisar la cuota o la URL.",
        "en": "Technician: forecast provider {provider} failing for {yard} since {start} "
              "({error}). Check its quota or URL.",
    },
    "provider_back": {
        "es": "Técnico: el proveedor de pronostico {provider} responde de nuevo para {yard}.",
        "en": "Technician: forecast provider {provider} answers again for {yard}.",
    },
    "modem_failing": {
        "es": "Técnico: el modem GSM no puede enviar SMS del tendal {yard} ({error}). "
              "Revisar senal, SIM y saldo.",
        "en": "Technician: the GSM modem cannot send SMS for yard {yard} ({error}). Check "
              "signal, SIM and credit.",
    },
    "modem_back": {
        "es": "Técnico: el modem GSM del tendal {yard} envia SMS de nuevo.",
        "en": "Technician: the GSM modem for yard {yard} sends SMS again.",
    },
    # The quality warnings of a drying batch (server/batches/warnings.py), to quality only.
    "batch_rewetting": {
        "es": "Calidad: bandejas del lote {batch} afuera de noche con {humidity}% de humedad "
              "en el tendal {yard}: {trays}. Los granos se rehumedecen: recogerlas.",
        "en": "Quality: trays of batch {batch} out at night in {humidity}% humidity at yard "
              "{yard}: {trays}. The beans take up water: pull them in.",
    },
    "batch_mould": {
        "es": "Calidad: el lote {batch} del tendal {yard} lleva {days} dias y no baja de "
              "{target}% ({moisture_es}). Riesgo de moho: revisar y secar.",
        "en": "Quality: batch {batch} at yard {yard} is {days} days out and not below "
              "{target}% yet ({moisture_en}). Mould risk: check and dry it.",
    },
    "batch_brittle": {
        "es": "Calidad: el lote {batch} del tendal {yard} tiene {moisture}% de humedad "
              "(menos de {limit}%): granos quebradizos. Dejar de secarlo.",
        "en": "Quality: batch {batch} at yard {yard} reads {moisture}% moisture (below "
              "{limit}%): brittle beans. Stop drying it.",
    },
}

# The same alerts for a yard with areas (``[[yards.areas]]``): the places the workers
# know ("las bandejas del sector Sur") instead of tray and sensor ids. ``render`` uses
# one when every area field it names is filled ({areas_es}: ``areas_phrase``), else the
# template above, so a yard without areas reads as before.
AREA_TEMPLATES: Final[Mapping[str, Mapping[str, str]]] = {
    "rain_forecast": {
        "es": "Lluvia {when_es} ({amount}) hacia las {start}. Recoger las bandejas "
              "{areas_es}, tendal {yard}. Responda OK.",
        "en": "Rain {when_en} ({amount}) around {start}. Pull in the trays {areas_en}, "
              "yard {yard}. Reply OK.",
    },
    "rain_now": {
        "es": "LLUEVE en el tendal {yard} (sensor {wet_es}) desde las {start}. Recoger las "
              "bandejas YA. Responda OK.",
        "en": "RAINING at yard {yard} (sensor {wet_en}) since {start}. Pull in the trays "
              "NOW. Reply OK.",
    },
    "trays_still_out": {
        "es": "URGENTE: siguen afuera bandejas {areas_es}, tendal {yard}. Lluvia {rain_es}. "
              "Recogerlas ya y responder OK.",
        "en": "URGENT: trays still out {areas_en}, yard {yard}. Rain {rain_en}. Pull them "
              "in now and reply OK.",
    },
    "trays_reminder": {
        "es": "RECORDATORIO: sin confirmar adentro bandejas {areas_es}, tendal {yard}. "
              "Lluvia {rain_es}. Recogerlas y responder OK.",
        "en": "REMINDER: trays {areas_en} not confirmed in, yard {yard}. Rain {rain_en}. "
              "Pull them in and reply OK.",
    },
}

# A repeat says so, so nobody thinks it is a second rain.
REPEAT_PREFIX: Final = {"es": "REPITO: ", "en": "REMINDER: "}

TITLES: Final[Mapping[str, Mapping[str, str]]] = {
    "rain_forecast": {"es": "Lluvia prevista", "en": "Rain expected"},
    "rain_now": {"es": "Lluvia ahora", "en": "Raining now"},
    "trays_still_out": {"es": "Bandejas afuera", "en": "Trays still out"},
    "trays_reminder": {"es": "Bandejas sin confirmar", "en": "Trays not confirmed in"},
    "trays_unknown": {"es": "Sensor de bandeja falla", "en": "Tray switch unknown"},
    "all_clear": {"es": "Sin lluvia", "en": "All clear"},
    "humidity_surge": {"es": "Humedad subiendo", "en": "Humidity rising"},
    "node_offline": {"es": "Nodo sin señal", "en": "Node offline"},
    "node_back": {"es": "Nodo de nuevo en línea", "en": "Node back"},
    "forecast_stale": {"es": "Sin pronóstico", "en": "No forecast"},
    "forecast_back": {"es": "Pronóstico de nuevo", "en": "Forecast back"},
    "delivery_failed": {"es": "Mensajes no salen", "en": "Messages failing"},
    "delivery_back": {"es": "Mensajes de nuevo", "en": "Messages back"},
    "provider_failing": {"es": "Proveedor de pronóstico falla", "en": "Forecast provider "
                                                                      "failing"},
    "provider_back": {"es": "Proveedor de pronóstico de nuevo", "en": "Forecast provider "
                                                                      "back"},
    "modem_failing": {"es": "Módem GSM falla", "en": "GSM modem failing"},
    "modem_back": {"es": "Módem GSM de nuevo", "en": "GSM modem back"},
    "batch_rewetting": {"es": "Lote rehumedeciéndose", "en": "Batch rewetting"},
    "batch_mould": {"es": "Riesgo de moho", "en": "Mould risk"},
    "batch_brittle": {"es": "Granos quebradizos", "en": "Brittle beans"},
}

_FLEXIBLE: Final = ("yard", "trays", "nodes", "error", "node", "provider", "batch",
                    "areas_es", "areas_en", "wet_es", "wet_en")
# When a text is too long, each flexible field is first cut to this many characters,
# so the yard's name and the trays both survive in a readable form.
_CAPS: Final = {"yard": 24, "trays": 48, "nodes": 30, "error": 36, "node": 24, "provider": 16,
                "batch": 24, "areas_es": 48, "areas_en": 48, "wet_es": 30, "wet_en": 30}


class MessageError(ValueError):
    """A template cannot be rendered within one segment (a bug in the templates)."""


@dataclass(frozen=True, slots=True)
class Text:
    title: str
    body: str


def when_phrase(lead_min: float, language: str) -> str:
    """'en ~40 min' / 'in ~40 min'; 'ya' / 'now' when it is due."""
    if lead_min < 3:
        return "ya" if language == "es" else "now"
    rounded = round(lead_min / 5) * 5 or round(lead_min)
    return f"en ~{rounded} min" if language == "es" else f"in ~{rounded} min"


def expected_phrase(lead_min: float, language: str) -> str:
    """When the forecast expects the rain: 'en ~40 min', or 'prevista' / 'expected' when it
    is due. Never 'ya': only a plate or a gauge can say the rain is here."""
    if lead_min < 3:
        return "prevista" if language == "es" else "expected"
    return when_phrase(lead_min, language)


def rain_phrase(observed: bool, start_hhmm: str, language: str) -> str:
    """'ya' / 'now' when a plate or gauge says it rains, else the expected time, as the
    workers read a clock: 'hacia las 15:00' / 'around 15:00'."""
    if observed:
        return "ya" if language == "es" else "now"
    return f"hacia las {start_hhmm}" if language == "es" else f"around {start_hhmm}"


def areas_phrase(names: Sequence[str], language: str) -> str:
    """Where the trays are, as the workers say it: 'del sector Sur' / 'in area Sur',
    'de los sectores Norte y Sur' / 'in areas Norte and Sur'; '' without names."""
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + (
        " y " if language == "es" else " and ") + names[-1]
    if language == "es":
        return f"del sector {listed}" if len(names) == 1 else f"de los sectores {listed}"
    return f"in area {listed}" if len(names) == 1 else f"in areas {listed}"


def amount_phrase(prob_pct: float | None, precip_mm: float | None) -> str:
    if prob_pct is not None:
        return f"{prob_pct:.0f}%"
    if precip_mm is not None:
        return f"{precip_mm:.1f} mm/h"
    return "?"


def moisture_phrase(moisture_pct: float | None, language: str) -> str:
    """'ultima lectura 9.0%' / 'last reading 9.0%'; 'sin lecturas' / 'no readings' without."""
    if moisture_pct is None:
        return "sin lecturas" if language == "es" else "no readings"
    return (f"ultima lectura {moisture_pct:.1f}%" if language == "es"
            else f"last reading {moisture_pct:.1f}%")


def _template(kind: str, language: str, fields: Mapping[str, object]) -> str:
    """The area template when every area field it names is filled, else the plain one."""
    with_areas = AREA_TEMPLATES.get(kind, {}).get(language)
    if with_areas is not None:
        names = [name for _, name, _, _ in Formatter().parse(with_areas) if name]
        if all(fields.get(name) for name in names if name.startswith(("areas_", "wet_"))):
            return with_areas
    return TEMPLATES[kind][language]


def render(kind: str, language: str, fields: Mapping[str, object], *,
           repeat: bool = False) -> Text:
    """The title and GSM-7 body for one alert message, at most 160 septets."""
    language = language if language in ("es", "en") else "es"
    template = REPEAT_PREFIX[language] * repeat + _template(kind, language, fields)
    values = {key: gsm7.fold(str(value)) for key, value in fields.items()}
    body = template.format_map(values)
    if gsm7.septets(body) > gsm7.SINGLE_SEGMENT:
        for key, cap in _CAPS.items():
            if key in values and len(values[key]) > cap:
                values[key] = values[key][: cap - 3].rstrip() + "..."
        body = template.format_map(values)
    # Shorten the longest flexible field until it fits: a long yard name or
    # many trays must not push the text into a second segment.
    while gsm7.septets(body) > gsm7.SINGLE_SEGMENT:
        present = [k for k in _FLEXIBLE if k in values and "{" + k + "}" in template
                   and len(values[k]) > 4]
        if not present:
            raise MessageError(f"{kind}/{language} does not fit one SMS: {body!r}")
        longest = max(present, key=lambda k: len(values[k]))
        excess = gsm7.septets(body) - gsm7.SINGLE_SEGMENT
        keep = max(len(values[longest]) - excess - 3, 1)
        values[longest] = values[longest][:keep].rstrip() + "..."
        body = template.format_map(values)
    if not gsm7.is_gsm7(body):
        raise MessageError(f"{kind}/{language} is not GSM-7: {body!r}")
    return Text(title=TITLES[kind][language], body=body)
