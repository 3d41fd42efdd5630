"""What a climate reading says about the air's drying power: dew point and vapour-pressure deficit.

Pure functions of temperature and relative humidity, used where readings are
stored (``server/points.py``) and where a batch's drying is counted
(``server/batches/``). No dependencies: a command that only reads figures
does not load the InfluxDB client library for them.
"""

from __future__ import annotations

import math

# Magnus formula coefficients over water (Alduchov & Eskridge 1996): within
# 0.35 degC of the exact dew point between -40 and 50 degC.
_MAGNUS_A = 17.625
_MAGNUS_B_C = 243.04


def dew_point_c(temperature_c: float, humidity_pct: float) -> float | None:
    """The dew point for air at ``temperature_c`` and relative humidity ``humidity_pct``.

    ``None`` at 0 % humidity, where it is undefined (minus infinity).
    """
    if humidity_pct <= 0.0:
        return None
    # log(h) - log(100), not log(h / 100): a tiny (denormal) humidity the
    # contract accepts would underflow to 0 and make log() fail.
    gamma = math.log(humidity_pct) - math.log(100.0) + _MAGNUS_A * temperature_c / (
        _MAGNUS_B_C + temperature_c)
    return _MAGNUS_B_C * gamma / (_MAGNUS_A - gamma)


def saturation_vapour_pressure_kpa(temperature_c: float) -> float:
    """Saturation vapour pressure over water (Tetens, as in FAO-56 eq. 11)."""
    return 0.6108 * math.exp(17.27 * temperature_c / (temperature_c + 237.3))


def vpd_kpa(temperature_c: float, humidity_pct: float) -> float:
    """Vapour pressure deficit: how much more water the air could take (its drying power).

    0 kPa in saturated air (nothing dries); above ~1.5 kPa beans dry fast.
    """
    return saturation_vapour_pressure_kpa(temperature_c) * (1.0 - humidity_pct / 100.0)
