#!/bin/sh
# Starts Chromium in kiosk mode on the Grafana wall dashboard, once Grafana answers.
# Run by secadero-kiosk.service with /etc/secadero/kiosk.env:
#   KIOSK_URL   the wall dashboard in kiosk mode, e.g.
#               http://192.168.1.10:3000/d/secadero-wall/pantalla-del-tendal?orgId=1&kiosk&var-yard=chazuta
#   GRAFANA_HEALTH_URL  Grafana's health check, e.g. http://192.168.1.10:3000/api/health
#   KIOSK_RETRY_S       seconds between health checks while Grafana is away (default 5)
set -eu
: "${KIOSK_URL:?set KIOSK_URL in /etc/secadero/kiosk.env}"
: "${GRAFANA_HEALTH_URL:?set GRAFANA_HEALTH_URL in /etc/secadero/kiosk.env}"

# Grafana (or the Wi-Fi) may come up after this Pi: wait, printing why on the journal.
retry_s=${KIOSK_RETRY_S:-5}
tries=0
until curl --silent --fail --max-time 5 "$GRAFANA_HEALTH_URL" >/dev/null; do
    if [ $((tries % 12)) -eq 0 ]; then
        echo "waiting for Grafana at $GRAFANA_HEALTH_URL (try $((tries + 1)))"
    fi
    tries=$((tries + 1))
    sleep "$retry_s"
done

# A fresh profile every start: no "restore pages?" bubble, no stale cache, no cookies
# to expire (the display is an anonymous Grafana viewer, docs/grafana.md).
profile=$(mktemp -d /tmp/secadero-kiosk.XXXXXX)
trap 'rm -rf "$profile"' EXIT

# cage: one full-screen program, no desktop; -d: no window decorations. It never
# blanks the screen by itself (no idle daemon runs); consoleblank=0 covers the console.
exec cage -d -- chromium \
    --kiosk --user-data-dir="$profile" \
    --noerrdialogs --disable-infobars --no-first-run \
    --disable-session-crashed-bubble --disable-features=Translate \
    --check-for-update-interval=31536000 --password-store=basic \
    --ozone-platform=wayland \
    "$KIOSK_URL"
