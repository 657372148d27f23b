"""Correlated control commands (gateway.commands): tied to answers of their own network
only, bounded per network, forgotten after their time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.commands import Command, Commands

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _command(cid: str, network: str = "n1") -> Command:
    return Command(cid, network, "v", "control/d/v", T0)


def test_an_answer_is_tied_to_its_command_in_its_own_network_only():
    commands = Commands()
    commands.expect(_command("c1"))
    assert commands.answer("n2", b"c1", b"forged", T0) is None
    assert commands.answer("n1", b"\xff", b"x", T0) is None
    done = commands.answer("n1", b"c1", b"ok", T0, "text/plain")
    assert (done.response, done.content_type) == (b"ok", "text/plain")
    assert commands.get("c1", T0).response == b"ok" and commands.answered == 1


def test_each_network_keeps_its_newest_commands_and_each_only_for_a_while():
    commands = Commands(per_network=2, keep=60)
    for cid in ("a", "b", "c"):
        commands.expect(_command(cid))
    commands.expect(_command("x", "n2"))
    assert commands.get("a", T0) is None and commands.forgotten == 1
    assert commands.get("b", T0) is not None and commands.get("x", T0) is not None
    assert commands.get("b", T0 + timedelta(seconds=61)) is None
    assert commands.forgotten == 2


def test_a_newer_command_with_the_same_id_replaces_the_older_one():
    commands = Commands()
    commands.expect(_command("same", "n1"))
    commands.expect(_command("same", "n2"))
    assert commands.get("same", T0).network == "n2" and not commands.waiting("n1")
