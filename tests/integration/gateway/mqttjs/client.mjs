// One MQTT.js client for the gateway's interop tests (test_mqtt5_clients.py).
//
// node client.mjs '<json>' where the JSON names: host, port, ca, cert, key, protocolVersion
// (4 or 5), clientId, subscribe (topic filters, QoS 1), publish ([{topic, payload, qos}],
// sent one after the other once subscribed), expect (messages to wait for). Every answer
// is printed as one JSON line: connack, suback, puback (with the MQTT 5 reason code and
// reason string of a refusal), message, disconnect (a server DISCONNECT), error, done.
// Exits 0 after `done`, 1 on an error or when nothing more comes for 20 s.
import { readFileSync } from "node:fs";
import mqtt from "mqtt";

const spec = JSON.parse(process.argv[2]);
const say = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));
const give_up = setTimeout(() => { say("error", { message: "timed out" }); process.exit(1); },
                           20000);

const client = mqtt.connect({
  host: spec.host, port: spec.port, protocol: "mqtts",
  ca: readFileSync(spec.ca), cert: readFileSync(spec.cert), key: readFileSync(spec.key),
  servername: "localhost", rejectUnauthorized: true,
  protocolVersion: spec.protocolVersion, clientId: spec.clientId, clean: true,
  reconnectPeriod: 0, connectTimeout: 10000,
});

let received = 0;
const finish = () => {
  clearTimeout(give_up);
  client.end(false, {}, () => { say("done"); process.exit(0); });
};
const maybe_finish = (published) => {
  if (published && received >= (spec.expect ?? 0)) finish();
};

let published = false;
client.on("message", (topic, payload, packet) => {
  received += 1;
  say("message", { topic, payload: payload.toString(), qos: packet.qos,
                   properties: packet.properties ?? {} });
  maybe_finish(published);
});
client.on("disconnect", (packet) => say("disconnect", {
  reasonCode: packet.reasonCode, reasonString: packet.properties?.reasonString }));
client.on("error", (err) => {
  say("error", { message: err.message, code: err.code });
  process.exit(1);
});

async function publish_all() {
  for (const p of spec.publish ?? []) {
    await new Promise((resolve) => {
      client.publish(p.topic, p.payload, { qos: p.qos ?? 1 }, (err, packet) => {
        say("puback", { topic: p.topic, refused: Boolean(err),
                        reasonCode: err?.code ?? packet?.reasonCode ?? 0,
                        reasonString: packet?.properties?.reasonString });
        resolve();
      });
    });
  }
}

client.on("connect", async (connack) => {
  say("connack", { reasonCode: connack.reasonCode ?? connack.returnCode ?? 0,
                   sessionPresent: connack.sessionPresent,
                   properties: connack.properties ?? {} });
  if ((spec.subscribe ?? []).length) {
    const granted = await client.subscribeAsync(spec.subscribe, { qos: 1 });
    say("suback", { granted: granted.map((g) => g.qos) });
  }
  if (spec.ready) say("ready");
  await publish_all();
  published = true;
  maybe_finish(published);
});
