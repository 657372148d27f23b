"""Simulated devices, fleets and attack scenarios over paho-mqtt.

The simulator talks to the gateway only over the wire, as real firmware would: it never
imports `gateway`, so it cannot hide a gateway bug.
"""
