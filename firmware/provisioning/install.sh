#!/bin/sh
# Install the secadero node agent on Raspberry Pi OS (Bookworm, 32- or 64-bit).
#
#   sudo sh firmware/provisioning/install.sh [--sht31] [SOURCE]
#
# SOURCE is what pip installs (default: the repository this script is in).
# Run it again to upgrade: the config in /etc/secadero is never overwritten.
# What it does, in order:
#   1. apt packages: Python, lgpio/libgpiod for gpiozero and the DHT22 driver,
#      fake-hwclock (keeps a sane clock across reboots without an RTC),
#      systemd-timesyncd (NTP), sqlite3 (to look into the outbox by hand);
#   2. a system user "secadero" in the gpio (and i2c) groups;
#   3. a virtualenv in /opt/secadero/venv with secadero[edge];
#   4. /etc/secadero/node.toml from the sample (edit it!), /var/lib/secadero;
#   5. the systemd unit secadero-node.service, enabled and started.
set -eu

SHT31=0
if [ "${1:-}" = "--sht31" ]; then SHT31=1; shift; fi
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SOURCE=${1:-$REPO}
PREFIX=/opt/secadero
ETC=/etc/secadero

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: sudo sh $0" >&2
    exit 1
fi

echo "== apt packages"
apt-get update
apt-get install -y --no-install-recommends \
    python3 python3-venv python3-pip python3-lgpio python3-libgpiod libgpiod2 \
    fake-hwclock systemd-timesyncd sqlite3
systemctl enable --now systemd-timesyncd

if [ "$SHT31" -eq 1 ]; then
    echo "== enabling I2C for the SHT31"
    raspi-config nonint do_i2c 0
fi

echo "== user secadero"
if ! id secadero >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/secadero --shell /usr/sbin/nologin secadero
fi
usermod -a -G gpio secadero
getent group i2c >/dev/null && usermod -a -G i2c secadero

echo "== virtualenv $PREFIX/venv"
mkdir -p "$PREFIX"
# --system-site-packages: use Raspberry Pi OS's lgpio build instead of compiling one.
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv --system-site-packages "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --upgrade pip
"$PREFIX/venv/bin/pip" install --upgrade "$SOURCE[edge]"
if [ "$SHT31" -eq 1 ]; then "$PREFIX/venv/bin/pip" install --upgrade smbus2; fi
mkdir -p "$PREFIX/docs"
[ -f "$REPO/docs/hardware.md" ] && cp "$REPO/docs/hardware.md" "$PREFIX/docs/"

echo "== config $ETC"
install -d -m 0750 -o root -g secadero "$ETC"
if [ ! -f "$ETC/node.toml" ]; then
    install -m 0640 -o root -g secadero "$REPO/edge/node.example.toml" "$ETC/node.toml"
    echo "   wrote $ETC/node.toml: set yard, id, broker and wiring before starting"
fi
install -d -m 0750 -o secadero -g secadero /var/lib/secadero

echo "== systemd unit"
install -m 0644 "$HERE/secadero-node.service" /etc/systemd/system/secadero-node.service
systemctl daemon-reload
if "$PREFIX/venv/bin/secadero" check-config "$ETC/node.toml"; then
    systemctl enable --now secadero-node.service
    echo "   started. State: sudo -u secadero $PREFIX/venv/bin/secadero edge status --config $ETC/node.toml"
else
    systemctl enable secadero-node.service
    echo "   fix the problems above, then: sudo systemctl start secadero-node" >&2
fi
