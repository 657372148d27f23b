"""`make bench`: fleetgate side by side with mosquitto, amqtt and a do-it-yourself pipeline.

The harness measures every server from the outside, over real mTLS on loopback, with one load
generator (`bench.loadgen`) shared by all systems. It never imports the `gateway` package, so a
figure can only come from the wire. Entry point: ``python -m bench`` (see ``bench.__main__``).
"""
