"""fleetgate's gateway: MQTT over mutual TLS, one jail per network, durable ingest."""
