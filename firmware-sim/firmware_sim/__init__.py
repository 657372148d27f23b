"""Simulated devices, fleets and attack scenarios over paho-mqtt.

The simulator talks to the gateway only over the wire, as real firmware would: it never
imports `gateway`, so it cannot hide a gateway bug (a test proves it).

- `Loop` / `start_loop()`: one selector thread driving many paho clients (loop.py);
- `SimDevice(bundle, loop, host, port, model=, rate=, seed=, backoff=, on_event=, mqtt=)`:
  one firmware (MQTT 3.1.1 or 5): declare, report, obey controls, back off, buffer
  offline (device.py);
- `run_fleet(bundle_dirs, FleetOptions(...), processes=)` -> `FleetResult` (fleet.py);
- `Matrix(...).run()` -> `list[Result]`, the attack matrix (attack.py);
- `load_bundle(dir)`, `find_bundles(dir)`, `load_model(file)`, `THERMOSTAT`;
- `main(argv)`: the `firmware-sim` command (cli.py). Errors: `SimError` and its exit codes.
"""

from .bundle import Bundle, find_bundles, load_bundle, parse_hostport
from .device import Backoff, DeviceStats, SimDevice
from .errors import ExitCode, SimError
from .loop import Loop, start_loop
from .model import THERMOSTAT, Readings, load_model

__all__ = [
    "THERMOSTAT", "Backoff", "Bundle", "DeviceStats", "ExitCode", "Loop", "Readings",
    "SimDevice", "SimError", "find_bundles", "load_bundle", "load_model", "parse_hostport",
    "start_loop",
]
