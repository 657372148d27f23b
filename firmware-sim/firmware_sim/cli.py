"""`firmware-sim`: simulated devices, fleets and attacks, over the wire only.

EXAMPLES
    firmware-sim run --bundle certs/devices/<uuid> --gateway 127.0.0.1:8883 --rate 2
    firmware-sim run --bundle B --model my-model.json --seed 7 --duration 60
    firmware-sim run --claim certs/claims/line3 --bundle certs/devices/mine
    firmware-sim fleet --bundles certs/devices --count 1000 --rate 0.2 --duration 60
    firmware-sim fleet --bundles /tmp/b --make-bundles --count 50 --duration 10
    firmware-sim run --bundle B --mqtt 5     # MQTT 5: refused reports print their reason
    firmware-sim fleet --bundles B --count 100 --mqtt 5 --session-expiry 600
    firmware-sim attack --bundle certs/devices/<a> --victim-bundle certs/devices/<b>
    firmware-sim attack --resources --bundle A --victim-bundle B --gateway-pid 1234 \
        --data /var/lib/fleetgate --http 127.0.0.1:8443 --operator certs/operator

Exit codes: 0 ok; 1 `attack`: an attempt got through (--resources: a goal was missed);
2 bad usage; 3 bundle missing or unreadable; 4 bad --model file; 5 gateway unreachable or
refused us; 6 model/rejected; 7 attack certificates could not be made.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .bundle import find_bundles, load_bundle, parse_hostport
from .device import MQTT_VERSIONS, SESSION_EXPIRY, Backoff, SimDevice
from .errors import BundleError, ExitCode, GatewayError, RejectedError, SimError
from .fleet import FleetOptions, live_line, print_table, run_fleet
from .loop import start_loop
from .model import load_model


def _hostport(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return x


def _expiry(text: str) -> int:
    try:
        x = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 0 <= x <= 0xFFFF_FFFF:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 to 4294967295 (MQTT 5 limit)")
    return x


def _version() -> str:
    try:
        return importlib.metadata.version("fleetgate")
    except importlib.metadata.PackageNotFoundError:  # a source tree never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firmware-sim",
        description="Simulated device firmware for a fleetgate gateway (paho-mqtt over mTLS).",
        epilog=__doc__.split("EXAMPLES", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"firmware-sim {_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", type=_hostport, default=("127.0.0.1", 8883),
                       metavar="HOST:PORT", help="the gateway's MQTT listener (127.0.0.1:8883)")

    def device_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, help="JSON declaration (default: a thermostat)")
        p.add_argument("--rate", type=_positive, default=1.0, help="ticks per second (1)")
        p.add_argument("--seed", type=int, default=0, help="seed of the readings (0)")
        p.add_argument("--duration", type=_positive,
                       help="seconds to run (default: until Ctrl-C or SIGTERM)")
        p.add_argument("--backoff-base", type=_positive, default=0.5,
                       help="first reconnect delay in s (0.5), doubled up to --backoff-max")
        p.add_argument("--backoff-max", type=_positive, default=30.0,
                       help="longest reconnect delay in s (30)")
        p.add_argument("--mqtt", choices=list(MQTT_VERSIONS), default="3.1.1",
                       help="MQTT version (3.1.1); with 5 a refused report, CONNACK or the "
                            "gateway's DISCONNECT prints its reason code and reason string")
        p.add_argument("--session-expiry", type=_expiry, default=SESSION_EXPIRY, metavar="S",
                       help=f"MQTT 5: seconds the gateway keeps the session after a "
                            f"disconnect ({SESSION_EXPIRY}; 3.1.1 sessions do not expire)")

    run = verbs.add_parser("run", help="one device: declare, report, obey controls")
    run.add_argument("--bundle", type=Path, required=True, help="device bundle folder")
    run.add_argument("--claim", type=Path, help="a claim folder (claim.crt|key, ca.crt): with "
                     "no bundle yet, provision one into --bundle first")
    run.add_argument("--renew", action="store_true",
                     help="renew the certificate now (else once 2/3 of its lifetime passed)")
    common(run)
    device_opts(run)
    run.add_argument("--json", action="store_true", help="events as JSON lines")

    fleet = verbs.add_parser("fleet", help="one simulated device per bundle, at once")
    fleet.add_argument("--bundles", type=Path, required=True, help="folder of bundle folders")
    fleet.add_argument("--count", type=int, help="use (or make) this many bundles")
    fleet.add_argument("--make-bundles", action="store_true",
                       help="issue missing bundles with `fleet-ca issue device` first")
    fleet.add_argument("--processes", type=int, help="worker processes (default: 1 per 2000)")
    fleet.add_argument("--events", help="append every device event to this JSON-lines file")
    fleet.add_argument("--json", action="store_true", help="final figures as one JSON object")
    common(fleet)
    device_opts(fleet)

    attack = verbs.add_parser("attack", help="try to break out of the jail; exit 1 if any works")
    attack.add_argument("--bundle", type=Path, required=True, help="the attacker's bundle")
    attack.add_argument("--victim", help="the victim's network UUID")
    attack.add_argument("--victim-bundle", type=Path,
                        help="run the victim with this bundle, to see leaks from its side")
    attack.add_argument("--attack-certs", type=Path,
                        help="folder with <kind>/device.crt|key for expired, revoked, server")
    attack.add_argument("--ca-home", type=Path,
                        help="an unencrypted CA home to sign expired/revoked certificates "
                        "with, in memory (it is only read: nothing recorded)")
    attack.add_argument("--json", action="store_true", help="results as JSON lines")
    common(attack)
    _resource_opts(attack.add_argument_group(
        "resource attacks (--resources): one device against the gateway's shared resources"))
    return parser


def _resource_opts(g: Any) -> None:
    from .hogs import ATTACKS, Sizes

    d = Sizes()
    g.add_argument("--resources", action="store_true",
                   help="run the resource attacks (needs --victim-bundle) instead of the jail "
                        "matrix; exit 1 if a goal is missed")
    g.add_argument("--only", action="append", metavar="ATTACK",
                   help=f"run only these ({', '.join(ATTACKS)}); repeatable")
    g.add_argument("--seconds", type=_positive, default=20.0, help="each attack's length (20)")
    g.add_argument("--baseline", type=_positive, default=5.0,
                   help="quiet seconds measured before each attack (5)")
    g.add_argument("--gateway-pid", type=int, help="sample this process's RSS")
    g.add_argument("--data", type=Path, help="sample this folder's bytes on disk")
    g.add_argument("--log", type=Path, help="sample this log file's size")
    g.add_argument("--http", type=_hostport, metavar="HOST:PORT", help="the HTTPS API")
    g.add_argument("--operator", type=Path,
                   help="an operator bundle (operator.crt/.key, ca.crt): time its requests")
    g.add_argument("--rss-budget", type=_positive, default=256.0,
                   help="goal: the gateway's peak RSS in MiB (256)")
    g.add_argument("--growth-factor", type=_positive, default=4.0,
                   help="goal: data growth <= this x acknowledged payload (4) ...")
    g.add_argument("--growth-slack", type=float, default=16.0,
                   help="... plus this many MiB (16)")
    g.add_argument("--no-cleanup", action="store_true",
                   help="leave what the attacks made (to time a restart with it)")
    g.add_argument("--cleanup-only", action="store_true",
                   help="only erase what an earlier --no-cleanup run left")
    for name, default, what in (
            ("retained", d.retained, "retained messages filled before the SUBSCRIBEs"),
            ("filters", d.filters, "`#` filters per SUBSCRIBE"),
            ("sessions", d.sessions, "offline persistent `#` sessions"),
            ("fanout-publishes", d.fanout_publishes, "QoS 1 publishes to them"),
            ("fanout-bytes", d.fanout_bytes, "bytes per such publish"),
            ("readings", d.readings, "readings per QoS 0 batch"),
            ("slow-http", d.slow_http, "slow HTTPS connections"),
            ("pending", d.pending, "connections that never start TLS"),
            ("flooders", d.flooders, "processes making TLS handshakes (tls-flood)")):
        g.add_argument(f"--{name}", type=int, default=default, help=f"{what} ({default})")
    g.add_argument("--source", default=d.source,
                   help=f"source address of the slow sockets ({d.source})")


# -- run ---------------------------------------------------------------------------------

def _print_event(as_json: bool):
    def sink(device: SimDevice, kind: str, fields: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps({"event": kind, **fields}, default=str), flush=True)
        else:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"{datetime.now().strftime('%H:%M:%S')} {kind} {detail}".rstrip(), flush=True)
    return sink


RENEW_CHECK = 60.0  # seconds between checks whether 2/3 of the lifetime has passed


def _enrol(args: argparse.Namespace, force_renew: bool, now: datetime | None = None) -> bool:
    """Provision from --claim if there is no bundle yet; renew when due (or forced).
    Returns whether the certificate changed."""
    from .enrol import provision, renew, renewal_due

    host, port = args.gateway
    sink = _print_event(args.json)
    if args.claim is not None and not (args.bundle / "device.crt").is_file():
        doc = provision(args.claim, args.bundle, host, port)
        sink(None, "provisioned", {"network": doc["network"], "serial": doc["serial"]})  # type: ignore[arg-type]
        return True
    if force_renew or renewal_due(args.bundle / "device.crt", now):
        doc = renew(args.bundle, host, port)
        sink(None, "renewed", {"network": doc["network"], "serial": doc["serial"]})  # type: ignore[arg-type]
        return True
    return False


def cmd_run(args: argparse.Namespace) -> int:
    if args.claim is not None or args.renew or (args.bundle / "device.crt").is_file():
        _enrol(args, args.renew)
    model = load_model(args.model)
    loop, thread = start_loop()
    host, port = args.gateway
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while True:
        device = SimDevice(load_bundle(args.bundle), loop, host, port, model=model,
                           rate=args.rate, seed=args.seed,
                           backoff=Backoff(args.backoff_base, args.backoff_max),
                           on_event=_print_event(args.json), mqtt=args.mqtt,
                           session_expiry=args.session_expiry)
        device.start()
        renewed = False
        try:
            while not stop.is_set() and not renewed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                stop.wait(RENEW_CHECK if left is None else min(left, RENEW_CHECK))
                if not stop.is_set():
                    try:
                        renewed = _enrol(args, False)
                    except SimError as exc:  # keep running on the current one; retry later
                        _print_event(args.json)(device, "renewal_failed", {"error": str(exc)})
        except KeyboardInterrupt:
            pass
        done = threading.Event()
        device.stop(done.set)
        done.wait(10.0)
        if not renewed:
            break  # else: reconnect with the renewed certificate
    loop.stop()
    thread.join(5.0)
    if not thread.is_alive():
        loop.close()
    stats = device.stats.as_dict()
    print(json.dumps({"event": "summary", **stats}) if args.json else
          "summary " + " ".join(f"{k}={v}" for k, v in stats.items()), flush=True)
    if device.rejected is not None:
        raise RejectedError("the gateway rejected the model: " + "; ".join(device.rejected))
    if device.stats.connects == 0:
        raise GatewayError(f"never connected to {host}:{port}")
    return ExitCode.OK


# -- fleet -------------------------------------------------------------------------------

def _make_bundles(folder: Path, count: int) -> None:
    have = len([d for d in folder.iterdir() if (d / "device.crt").is_file()]) \
        if folder.is_dir() else 0
    if have >= count:
        return
    cmd = ["fleet-ca", "issue", "device", "--count", str(count - have), "--out", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BundleError("--make-bundles needs `fleet-ca` on PATH") from None
    if done.returncode != 0:
        raise BundleError(f"fleet-ca issue device failed ({done.returncode}): "
                          f"{done.stderr.strip().splitlines()[-1:] or ''}")


def cmd_fleet(args: argparse.Namespace) -> int:
    if args.make_bundles:
        _make_bundles(args.bundles, args.count or 10)
    bundles = find_bundles(args.bundles, args.count)
    host, port = args.gateway
    opts = FleetOptions(host, port, rate=args.rate, duration=args.duration or math.inf,
                        seed=args.seed, model=load_model(args.model) if args.model else None,
                        backoff=Backoff(args.backoff_base, args.backoff_max),
                        events=args.events, start_spread=min(5.0, len(bundles) / 500),
                        mqtt=args.mqtt, session_expiry=args.session_expiry)
    tty = sys.stderr.isatty()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: cleanly

    def progress(totals: dict[str, int], count: int) -> None:
        if tty:
            print("\r" + live_line(totals, count) + "\x1b[K", end="", file=sys.stderr,
                  flush=True)

    result = run_fleet([b.dir for b in bundles], opts, processes=args.processes,
                       progress=progress)
    if tty:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps({"totals": result.totals, "devices": result.devices,
                          "seconds": round(result.seconds, 3)}))
    else:
        print_table(result)
    if result.totals["connects"] == 0:
        raise GatewayError(f"no device connected to {host}:{port}")
    return ExitCode.OK


# -- attack ------------------------------------------------------------------------------

def cmd_attack(args: argparse.Namespace) -> int:
    if args.resources or args.cleanup_only:
        from .resources import run_resources

        return run_resources(args)
    from .attack import run_attacks

    return run_attacks(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return ExitCode.OK if exc.code == 0 else ExitCode.USAGE
    handler = {"run": cmd_run, "fleet": cmd_fleet, "attack": cmd_attack}[args.verb]
    try:
        return handler(args)
    except SimError as exc:
        print(f"firmware-sim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
