"""One simulated device against the real gateway: declare, report, control, reconnect and
the offline buffer, all over real TLS with certificates from our own CA."""

from __future__ import annotations

from conftest import WAIT, tree_uuids


async def test_device_declares_the_thermostat_and_gets_its_uuids(make_device, sim_device):
    bundle = make_device()
    watched = sim_device(bundle.dir, rate=20)
    declared = await watched.wait("declared")
    assert declared["network"] == str(bundle.network_uuid)
    assert set(declared["devices"]) >= {"thermostat", "thermostat/temperature",
                                        "thermostat/humidity", "thermostat/setpoint"}


async def test_reports_are_stored_in_range_and_acknowledged(make_device, sim_device,
                                                            gateway_runner):
    bundle = make_device()
    watched = sim_device(bundle.dir, rate=50, seed=3)
    await watched.wait("declared")
    uuids = tree_uuids(watched.device.tree)
    await watched.wait("tick", n=10)
    # Drains: stops once every reading sent is acknowledged (up to `drain`, 5 s by default:
    # a loaded machine may need longer, and waiting longer costs nothing when acks come).
    watched.device.stop(drain=WAIT)
    stopped = await watched.wait("stopped")
    assert stopped["acked"] == stopped["sent"] >= 20
    temps = await gateway_runner.history(uuids["thermostat/temperature"])
    hums = await gateway_runner.history(uuids["thermostat/humidity"])
    setpoints = await gateway_runner.history(uuids["thermostat/setpoint"])
    assert len(setpoints) == 1  # its setting, reported once when declared
    assert len(temps) + len(hums) + 1 == stopped["sent"]  # acknowledged means stored
    assert all(10 <= float(r.data) <= 35 for r in temps)  # plausible, not mid [-40, 125]
    assert all(0 <= float(r.data) <= 100 for r in hums)
    assert stopped["errors"] == 0


async def test_control_command_is_applied_and_the_new_value_reported(make_device, sim_device,
                                                                     gateway_runner):
    bundle = make_device()
    watched = sim_device(bundle.dir, rate=5)
    await watched.wait("declared")
    setpoint = tree_uuids(watched.device.tree)["thermostat/setpoint"]
    await gateway_runner.control(setpoint, "22.5")
    applied = await watched.wait("control")
    assert applied == {"value": "thermostat/setpoint", "data": 22.5}
    watched.device.stop(drain=WAIT)
    await watched.wait("stopped")
    reported = await gateway_runner.history(setpoint)
    # what it had when it declared, then what it was told
    assert [r.data for r in reported][-1] == "22.5" and len(reported) == 2


async def test_control_of_a_read_only_value_is_ignored_not_applied(make_device, sim_device,
                                                           gateway_runner, ca_home):
    # The gateway validates commands; should one reach a value the device does not declare
    # writable, the firmware ignores it and says so instead of applying it.
    bundle = make_device()
    watched = sim_device(bundle.dir, rate=5)
    await watched.wait("declared")
    watched.device.loop.call_soon_threadsafe(lambda: watched.device._control(
        "thermostat/temperature", {"data": "30", "timestamp": "t"}))
    ignored = await watched.wait("control_ignored")
    assert ignored["value"] == "thermostat/temperature"
    assert watched.device.stats.controls == 0


async def test_device_reconnects_after_gateway_restart_and_flushes_its_buffer(
        make_device, sim_device, gateway_runner):
    bundle = make_device()
    watched = sim_device(bundle.dir, rate=20)
    await watched.wait("declared")
    temp = tree_uuids(watched.device.tree)["thermostat/temperature"]
    await gateway_runner.stop()
    await watched.wait("disconnected")
    offline = await watched.wait("tick", online=False)
    later = await watched.wait("tick", n=offline["n"] + 5)
    assert later["online"] is False  # still down: these readings wait in the buffer
    watched.forget()
    await gateway_runner.start()  # the same port, the same SQLite file
    await watched.wait("connected", reconnect=True)
    flushed = await watched.wait("flushed", value="thermostat/temperature")
    assert flushed["readings"] >= 6
    watched.device.stop(drain=WAIT)
    stopped = await watched.wait("stopped")
    assert stopped["reconnects"] == 1 and stopped["batches"] >= 2
    assert stopped["dropped"] == 0 and stopped["acked"] == stopped["sent"]
    rows = await gateway_runner.history(temp)
    stored = {float(r.data) for r in rows}
    # the offline reading we watched being taken is stored, with the device's timestamp
    assert offline["thermostat/temperature"] in stored
    assert len(rows) == watched.device.ticks


async def test_offline_buffer_is_bounded_and_drops_the_oldest(make_device, sim_device,
                                                              gateway_runner):
    bundle = make_device()
    await gateway_runner.stop()
    watched = sim_device(bundle.dir, rate=50, buffer_limit=10)
    await watched.wait("tick", n=10)  # 20 readings (2 sensors) into a buffer of 10
    assert watched.device.stats.buffered == 10
    assert watched.device.stats.dropped >= 10
    # The attempt runs on a connector thread, its failure is counted on the loop thread:
    # not necessarily before the tenth tick on a loaded machine.
    await watched.wait("connect_failed")
    assert watched.device.stats.connect_failures >= 1
