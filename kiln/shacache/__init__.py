"""ShaCache + ShaDir: a signed, content-addressed binary cache (server, client, CLI)."""
