"""The selector loop: timers in due order on its own thread, calls from other threads, and
one failing callback never stopping the others."""

from __future__ import annotations

import threading

from firmware_sim.fleet import FleetResult, live_line, print_table
from firmware_sim.loop import start_loop


def test_timers_run_in_due_order_on_the_loop_thread():
    loop, thread = start_loop()
    ran: list[tuple[str, int]] = []
    done = threading.Event()

    def at(name: str) -> None:
        ran.append((name, threading.get_ident()))
        if len(ran) == 3:
            done.set()

    loop.call_soon_threadsafe(lambda: (loop.call_later(0.03, lambda: at("c")),
                                       loop.call_later(0.0, lambda: at("a")),
                                       loop.call_later(0.01, lambda: at("b"))))
    assert done.wait(10)
    loop.stop()
    thread.join(10)
    assert [n for n, _ in ran] == ["a", "b", "c"]
    assert {t for _, t in ran} == {thread.ident}
    assert not thread.is_alive()


def test_a_failing_callback_is_counted_and_the_loop_goes_on():
    loop, thread = start_loop()
    after = threading.Event()
    loop.call_soon_threadsafe(lambda: 1 / 0)
    loop.call_soon_threadsafe(after.set)
    assert after.wait(10)
    loop.stop()
    thread.join(10)
    assert loop.errors == 1 and loop.last_error.startswith("ZeroDivisionError")


def test_live_line_and_final_table_show_the_fleets_counters():
    row = {"device": "d1", "connected": 1, "connects": 2, "reconnects": 1, "connect_failures": 3,
           "disconnects": 1, "sent": 40, "acked": 39, "errors": 0, "controls": 1,
           "buffered": 0, "dropped": 0, "batches": 1}
    totals = {k: v for k, v in row.items() if k != "device"}
    assert live_line(totals, 5) == ("connected 1/5  sent 40  acked 39  errors 0  "
                                    "reconnects 1")
    import io

    out = io.StringIO()
    print_table(FleetResult(dict(totals), [dict(row)], seconds=2.0), out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["device", "connects", "failures", "sent", "acked", "errors",
                                "reconnects", "controls", "dropped"]
    assert lines[2].split() == ["d1", "2", "3", "40", "39", "0", "1", "1", "0"]
    assert lines[-1] == "2.0 s, 20 acknowledged readings/s"
