"""A connection spamming refused publishes writes a bounded number of lines and a summary."""

from __future__ import annotations

from gwhelpers import MQTTTestClient

from gateway.mqtt.packets import ConnAck, ConnectReturnCode, PingReq, PingResp, Publish, QoS

SPAM = 300


async def test_refused_publishes_past_the_log_budget_end_in_one_summary_line(
    start_gateway, net_a
):
    # a budget that does not refill within the test: exactly `burst` lines get through
    running = await start_gateway(log_lines_per_connection=0.001, log_lines_burst=20)
    client = await MQTTTestClient.open(running, net_a)
    assert await client.connect("spammer") == ConnAck(ConnectReturnCode.ACCEPTED, False)
    await client.send(*[Publish(f"$SYS/{i}", b"x", QoS.AT_MOST_ONCE) for i in range(SPAM)],
                      PingReq())
    assert await client.receive() == PingResp()
    assert running.gateway.metrics.mqtt.publishes_denied.value == SPAM  # every one refused
    await client.aclose()
    summary = await running.logs.wait("log_suppressed", client_id="spammer")
    await running.logs.wait("disconnected", client_id="spammer")
    written = running.logs.find("publish_denied")
    assert len(written) <= 20
    assert summary["events"] == {"publish_denied": SPAM - len(written)}
    assert running.gateway.metrics.mqtt.log_lines_suppressed.value == SPAM - len(written)
    events = [r["event"] for r in running.logs.records if r.get("client_id") == "spammer"]
    assert events.index("log_suppressed") < events.index("disconnected")
