"""The broker's side of security: its users (registry, password and ACL files) and its
configuration, both written from the server's settings (docs/security.md)."""
