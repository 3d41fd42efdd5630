"""The production Mosquitto configuration, written from the server's ``[broker]`` settings.

``server/mosquitto.conf`` is this module's output for the default settings (a test
keeps the two equal), so the file a technician reads is the file the code writes.
"""

from __future__ import annotations

from secadero.server.broker.users import BrokerFiles
from secadero.settings import BrokerSettings


def render_mosquitto_conf(settings: BrokerSettings) -> str:
    """Mosquitto 2.0 configuration text: no anonymous access, a loopback listener for the
    server, a TLS listener for the nodes, password and ACL files, persistence, queue limits."""
    s = settings
    files = BrokerFiles(s.users_dir)
    tls_listener = f"listener {s.tls_port} {s.tls_bind}".rstrip()
    log_dest = "log_dest syslog" if s.log_dest == "syslog" else f"log_dest file {s.log_dest}"
    return f"""\
# Mosquitto 2.x for secadero: the production broker config.
# Written by `secadero broker config` from the [broker] section of the server's
# settings: change the settings and write it again rather than editing it.
# Install: sudo apt-get install mosquitto; this file goes to {s.conf_file}
# (the Debian main config already sets pid_file and includes conf.d/).
# Test it: mosquitto -c /etc/mosquitto/mosquitto.conf -v   (then Ctrl-C)

# One config for all listeners, and every listener declared: a Mosquitto 2.0 with
# NO listener binds loopback and allows anonymous clients.
per_listener_settings false

# Local clients (the server on this machine) in plain text, loopback only.
listener {s.local_port} 127.0.0.1
protocol mqtt

# The nodes over the yard's Wi-Fi: TLS 1.2 or later. Certificates from the
# yard's own CA (no internet needed): docs/security.md.
{tls_listener}
protocol mqtt
certfile {s.cert_file}
keyfile {s.key_file}
cafile {s.ca_file}
tls_version tlsv1.2

# No anonymous access: one user per node, one for the server, one read-only
# user for dashboards. `secadero nodes add|remove|rotate` keeps these two files
# (hashes made by mosquitto_passwd) and sends the broker SIGHUP to read them again.
allow_anonymous false
password_file {files.password_file}
acl_file {files.acl_file}
# false: the server's processes of a share group log in as one user with
# different client ids. A node's rights follow its username (the ACL), whatever
# client id it gives, so a node cannot speak for another by choosing its id.
use_username_as_clientid false

# Persistence: queued messages and sessions survive a broker restart. The
# snapshot is written on exit and every autosave_interval seconds; a crash
# loses what came after the last one, which is why nodes keep readings in their
# own outbox until the server's ack (a PUBACK is not durability).
persistence true
persistence_location {str(s.persistence_dir).rstrip("/")}/
autosave_interval {s.autosave_interval_s}
# Sessions of clients gone for good are forgotten after this long.
persistent_client_expiration {s.persistent_client_expiration_days}d

# Queue limits for a day of backlog for the server's session (the ingest is
# down, the nodes keep publishing). The default of 1000 queued messages per
# client SILENTLY DROPS the rest. A region of 500 nodes x 1 message / 10 s =
# 4.3 million messages a day; at ~250 bytes each (payload + topic + overhead)
# about 1.1 GB. Size these to your fleet: messages/day = nodes x 8640.
max_queued_messages {s.max_queued_messages}
# The memory guard: above this many bytes queued for one client, new messages
# for it are dropped (and logged). 1.5 GB fits a 2 GB+ server; lower it on a Pi.
max_queued_bytes {s.max_queued_bytes}
# QoS 1 messages in flight to one client before its acks: MQTT 5 clients (the
# ingest) set their own Receive Maximum; this applies to MQTT 3.1.1 clients.
max_inflight_messages {s.max_inflight_messages}

# Packets over the contract's 16 KiB payload (plus topic and headers) are
# refused at the broker already (the client is disconnected).
max_packet_size {s.max_packet_size}
max_keepalive {s.max_keepalive_s}
# Send small packets at once: with Nagle's algorithm on, a lone PUBLISH or
# PUBACK waits ~40 ms for company (measured: alert latency 44 ms -> 2 ms).
set_tcp_nodelay true

{log_dest}
log_type error
log_type warning
log_type notice
connection_messages true
"""
