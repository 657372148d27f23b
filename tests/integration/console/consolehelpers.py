"""The console's test environment and a small cookie-keeping HTTPS client."""

from __future__ import annotations

import http.client
import io
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import trio
from httphelpers import Device, client_context, seed_network

from gateway.app import Gateway
from gateway.audit import AuditTrail
from gateway.config import load_config
from gateway.console.wiring import console_for
from gateway.http import BarList, GatewayHooks, http_tls, serve_http
from gateway.http.certs import InventoryLookup
from gateway.http.server import HttpStatistics
from gateway.ingest import Ingest
from gateway.logs import EventLog
from gateway.server import serve_mqtt
from gateway.storage.ledger import LEDGER_FILE, ErasureLedger

PW = "a long enough password"


@dataclass
class ConsoleEnv:
    home: Any
    store: Any
    ingest: Ingest
    gateway: Gateway
    http: tuple[str, int]
    mqtt: tuple[str, int]
    data: Path
    log: io.StringIO
    accounts: Any = None
    stats: HttpStatistics = field(default_factory=HttpStatistics)

    def stop_the_minute(self) -> None:
        """Stop the per-minute figures' clock (`gateway.activity`) at the start of the
        current minute: what is counted from now on is read back whole. On the running
        clock a count read just past a minute boundary reads lower (the trailing minute
        weighs the previous one down as the new one goes on)."""
        activity = self.gateway.activity
        start = activity.clock() // 60 * 60
        activity.clock = lambda: start

    def browser(self) -> Browser:
        return Browser(self.http[0], self.http[1],
                       client_context(self.home.path / "root.crt"))

    async def connect(self, bundle: Any) -> None:
        """Connect `bundle` once (the network gets a status, its owner code is recorded)."""
        device = Device(*self.mqtt, bundle)
        (_, rc) = await device.connect()
        assert rc == 0
        await self.gateway.owner_codes.flush()
        await device.close()

    async def own_network(self, bundle: Any, email: str) -> tuple[Browser, str]:
        """Connect `bundle` (so the gateway records its owner code), seed data, make an
        owner account `email`, log in and claim the network with the bundle's code."""
        import json
        device = Device(*self.mqtt, bundle)
        (_, rc) = await device.connect()
        assert rc == 0
        await self.gateway.owner_codes.flush()
        await device.close()
        await seed_network(self.ingest, bundle.network_uuid, reports=30)
        await trio.to_thread.run_sync(self.accounts.add, email, PW, "owner")
        browser = self.browser()
        assert (await browser.login(email, PW)).status == 303
        code = json.loads((bundle.dir / "device.json").read_text())["owner_code"]
        answer = await browser.post("/console/claim", {"code": code})
        assert answer.status == 303, answer.text
        return browser, code


async def start_console_env(home: Any, data: Path, nursery: trio.Nursery, store: Any,
                            **options: Any) -> ConsoleEnv:
    """`options`: configuration options (the console's limits) over the defaults."""
    config = load_config(None, {"ca_home": home.path, "mqtt": "127.0.0.1:0", "data": data,
                                **options})
    stream = io.StringIO()
    log = EventLog(stream, truncate_ips=True)
    ingest = Ingest(store)
    bars = BarList(data / "barred.json")
    gateway = Gateway(config, log=log, ingest=ingest, status=store, bars=bars)
    mqtt = await nursery.start(serve_mqtt, gateway)
    audit = AuditTrail(store, log=log)
    hooks = GatewayHooks(store=store, ingest=ingest, gateway=gateway, bars=bars,
                         ledger=ErasureLedger(data / LEDGER_FILE), audit=audit)
    env = ConsoleEnv(home, store, ingest, gateway, ("", 0), mqtt, data, stream)

    async def serve(task_status: trio.TaskStatus[Any]) -> None:
        async with console_for(gateway) as factory:
            def console(api: Any) -> Any:
                made = factory(api)
                env.accounts = made.accounts
                return made
            await serve_http(("127.0.0.1", 0), http_tls(gateway.tls), store, hooks=hooks,
                             bars=bars, certificates=InventoryLookup(home.path), log=log,
                             stats=env.stats, console=console, audit=audit,
                             task_status=task_status)

    env.http = await nursery.start(serve)
    return env


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, self.text
        return m.group(1)


@dataclass
class Browser:
    """Keeps cookies like a browser would (Secure/HttpOnly/SameSite are the browser's job:
    the Selenium tests check those), one connection per request."""

    host: str
    port: int
    context: ssl.SSLContext
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)

    def _sync(self, method: str, path: str, body: bytes | None,
              headers: dict[str, str]) -> Answer:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=30)
        try:
            hdrs = dict(headers)
            if self.cookies:
                hdrs["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body, hdrs)
            resp = conn.getresponse()
            data = resp.read()
            answer = Answer(resp.status, resp.getheaders(), data)
        finally:
            conn.close()
        for name, value in answer.headers:
            if name.lower() == "set-cookie":
                self.set_cookies.append(value)
                pair = value.split(";", 1)[0]
                key, _, val = pair.partition("=")
                if "Max-Age=0" in value:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        return answer

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Answer:
        return await trio.to_thread.run_sync(
            lambda: self._sync(method, path, body, headers or {}))

    async def get(self, path: str) -> Answer:
        return await self.request("GET", path)

    async def post(self, path: str, fields: dict[str, str], *, csrf: bool = True) -> Answer:
        fields = dict(fields)
        if csrf and "csrf" not in fields:
            fields["csrf"] = (await self.get("/console/account")).csrf()
        return await self.request("POST", path, urlencode(fields).encode(),
                                  {"content-type": "application/x-www-form-urlencoded"})

    async def login(self, email: str, password: str) -> Answer:
        token = (await self.get("/console/login")).csrf()
        return await self.post("/console/login", {"email": email, "password": password,
                                                  "csrf": token})
