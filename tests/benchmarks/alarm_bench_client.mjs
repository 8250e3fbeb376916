// node-opcua's client as a SCADA alarm subscriber for bench_alarms.py, driven line by line.
// Usage: INTEROP_DIR=tests/interop node alarm_bench_client.mjs ENDPOINT PKI_DIR [USER PASSWORD]
// Subscribes to the Server object's events (AlarmConditionType or the refresh bracket), then reads
// JSON commands on stdin and answers each with a line "@@{json}" on stdout (node-opcua prints its own
// notices there too):
//   {"cmd": "expect", "id": k, "n": 1000, "active": true, "conditions": [...]}  -> "@@{id, ack}" at once,
//       "@@{id, tLast, count}" when n events of those conditions with ActiveState/Id == active arrived
//   {"cmd": "refresh", "id": k}  -> ConditionRefresh on its subscription: "@@{id, t0, tCall, tEnd, events}"
// Times are epoch milliseconds (performance.timeOrigin + performance.now()), comparable across processes.
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const require = createRequire(path.join(process.env.INTEROP_DIR, "package.json"));
const c = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const [endpoint, pkiDir, user, password] = process.argv.slice(2);
const now = () => performance.timeOrigin + performance.now();
const say = (obj) => process.stdout.write(`@@${JSON.stringify(obj)}\n`);
const ALARM = c.resolveNodeId("AlarmConditionType");
const START = c.resolveNodeId("RefreshStartEventType").toString();
const END = c.resolveNodeId("RefreshEndEventType").toString();

const certificateManager = new OPCUACertificateManager({ rootFolder: pkiDir, automaticallyAcceptUnknownCertificate: true });
await certificateManager.initialize();
const client = c.OPCUAClient.create({ applicationName: "alarm-bench", applicationUri: "urn:alarm-bench:node-opcua",
  clientCertificateManager: certificateManager, endpointMustExist: false,
  securityMode: c.MessageSecurityMode.None, securityPolicy: c.SecurityPolicy.None,
  connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 }, requestedSessionTimeout: 60000 });
await client.connect(endpoint);
const session = await client.createSession(user ? { type: c.UserTokenType.UserName, userName: user, password }
  : { type: c.UserTokenType.Anonymous });
const sub = await session.createSubscription2({ requestedPublishingInterval: 100, requestedLifetimeCount: 600,
  requestedMaxKeepAliveCount: 10, maxNotificationsPerPublish: 0, publishingEnabled: true });
// OfType(AlarmConditionType) or OfType(RefreshStartEventType) or OfType(RefreshEndEventType): a server that
// filters the refresh bracket by the where clause still delivers it.
const el = (i) => new c.ElementOperand({ index: i });
const ofType = (id) => ({ filterOperator: c.FilterOperator.OfType,
  filterOperands: [new c.LiteralOperand({ value: new c.Variant({ dataType: c.DataType.NodeId, value: id }) })] });
const where = new c.ContentFilter({ elements: [
  { filterOperator: c.FilterOperator.Or, filterOperands: [el(1), el(2)] }, ofType(ALARM),
  { filterOperator: c.FilterOperator.Or, filterOperands: [el(3), el(4)] },
  ofType(c.resolveNodeId("RefreshStartEventType")), ofType(c.resolveNodeId("RefreshEndEventType"))] });
const fields = ["EventId", "EventType", "SourceName", "Time", "Message", "Severity", "ConditionId", "ActiveState.Id",
  "Retain"];
const item = await sub.monitor({ nodeId: c.resolveNodeId("Server"), attributeId: c.AttributeIds.EventNotifier },
  { samplingInterval: 0, queueSize: 100000, discardOldest: false, filter: c.constructEventFilter(fields, where) },
  c.TimestampsToReturn.Neither);

let expecting = null;
let refreshing = null;
item.on("changed", (values) => {
  const t = now();
  const type = values[1].value?.toString();
  if (refreshing) {
    if (type === START) refreshing.started = true;
    else if (type === END) {
      const r = refreshing;
      refreshing = null;
      say({ id: r.id, t0: r.t0, tCall: r.tCall, tEnd: t, events: r.events });
    } else if (refreshing.started) refreshing.events += 1;
  }
  if (expecting) {
    const cond = values[6].value?.toString();
    if (values[7].value === expecting.active && expecting.conditions.has(cond)) {
      expecting.count += 1;
      if (expecting.count >= expecting.n) {
        const e = expecting;
        expecting = null;
        say({ id: e.id, tLast: t, count: e.count });
      }
    }
  }
});

say({ ready: true, subscriptionId: sub.subscriptionId });
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = JSON.parse(line);
  if (cmd.cmd === "expect") {
    expecting = { id: cmd.id, n: cmd.n, active: cmd.active, conditions: new Set(cmd.conditions), count: 0 };
    say({ id: cmd.id, ack: true });
  } else if (cmd.cmd === "refresh") {
    refreshing = { id: cmd.id, t0: now(), tCall: null, started: false, events: 0 };
    const r = refreshing;
    const status = await c.callConditionRefresh(session, sub.subscriptionId);
    r.tCall = now();
    if (status.value !== 0) say({ id: cmd.id, error: status.name });
  } else if (cmd.cmd === "quit") {
    break;
  }
}
await sub.terminate();
await session.close();
await client.disconnect();
await certificateManager.dispose();
process.exit(0);
