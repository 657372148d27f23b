"""fleetgate's certificate authority: root, issuing CA, device/server/operator profiles."""
