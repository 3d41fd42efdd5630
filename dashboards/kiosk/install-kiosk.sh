#!/bin/sh
# Sets up a Raspberry Pi (Raspberry Pi OS Lite, Bookworm) as the yard office's wall display.
#
#   sudo sh dashboards/kiosk/install-kiosk.sh
#
# What it does, in order:
#   1. apt packages: chromium, cage (the one-program Wayland compositor), curl;
#   2. a user "kiosk" (video, render, input groups) that runs nothing else;
#   3. screen blanking off: raspi-config's blanking off and consoleblank=0;
#   4. /etc/secadero/kiosk.env from the example (edit KIOSK_URL!);
#   5. the units secadero-kiosk.service and secadero-kiosk-restart.timer, enabled.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: sudo sh $0" >&2
    exit 1
fi

echo "== apt packages"
apt-get update
apt-get install -y --no-install-recommends chromium cage curl

echo "== user kiosk"
id kiosk >/dev/null 2>&1 || useradd --system --create-home --shell /usr/sbin/nologin kiosk
usermod -a -G video,render,input kiosk

echo "== screen blanking off"
if command -v raspi-config >/dev/null 2>&1; then
    raspi-config nonint do_blanking 1
fi
for cmdline in /boot/firmware/cmdline.txt /boot/cmdline.txt; do
    if [ -f "$cmdline" ] && ! grep -q consoleblank=0 "$cmdline"; then
        sed -i '1 s/$/ consoleblank=0/' "$cmdline"
        break
    fi
done

echo "== /etc/secadero/kiosk.env"
install -d -m 0755 /etc/secadero
if [ ! -f /etc/secadero/kiosk.env ]; then
    install -m 0644 "$HERE/kiosk.env.example" /etc/secadero/kiosk.env
    echo "   edit KIOSK_URL and GRAFANA_HEALTH_URL in /etc/secadero/kiosk.env"
fi

echo "== systemd units"
install -d /opt/secadero/dashboards/kiosk
install -m 0755 "$HERE/kiosk.sh" /opt/secadero/dashboards/kiosk/kiosk.sh
for unit in secadero-kiosk.service secadero-kiosk-restart.service \
            secadero-kiosk-restart.timer; do
    install -m 0644 "$HERE/$unit" /etc/systemd/system/
done
systemctl daemon-reload
systemctl disable getty@tty1.service 2>/dev/null || true
systemctl enable secadero-kiosk.service secadero-kiosk-restart.timer
systemctl restart secadero-kiosk.service
systemctl start secadero-kiosk-restart.timer
echo "done: the display starts on tty1; 'journalctl -u secadero-kiosk' says what it does"
