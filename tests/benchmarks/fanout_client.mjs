// node-opcua's client as a data-change subscriber for bench_fanout.py, driven line by line.
// Usage: INTEROP_DIR=tests/interop node fanout_client.mjs ENDPOINT PKI_DIR NAMESPACE_URI COUNT PER_DEVICE
// One session, one subscription (publishing 100 ms, keep-alive 10, no limit on notifications per publish),
// COUNT monitored items on the Double variables D<d>.V<v> (d = i / PER_DEVICE, v = i % PER_DEVICE) of
// NAMESPACE_URI, sampling interval 0, queue size 1, discard oldest, created 1,000 per call.
// Prints "@@{ready, items, failed, revisedSamplingInterval, revisedQueueSize}" when monitoring, then answers
// JSON commands on stdin with "@@{json}" lines (node-opcua prints its own notices there too):
//   {"cmd": "reset"}  -> counting starts afresh: "@@{reset: true}"
//   {"cmd": "stats"}  -> since the reset: notifications, publish responses, keep-alives, seconds, this process's
//                        CPU, and the latency histogram (SourceTimestamp to receipt, 0.1 ms buckets, sparse
//                        [bucket, count] pairs)
//   {"cmd": "quit"} or stdin's end -> closes the session and exits.
// Notifications are counted from the raw NotificationMessage, so no per-item event is dispatched by this code.
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const require = createRequire(path.join(process.env.INTEROP_DIR, "package.json"));
const c = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const [endpoint, pkiDir, namespaceUri, countArg, perDeviceArg] = process.argv.slice(2);
const count = Number(countArg);
const perDevice = Number(perDeviceArg);
const BUCKET_MS = 0.1;
const BUCKETS = 600_000; // up to 60 s; later ones land in the last bucket
const say = (obj) => process.stdout.write(`@@${JSON.stringify(obj)}\n`);
const now = () => performance.timeOrigin + performance.now();

const certificateManager = new OPCUACertificateManager({ rootFolder: pkiDir, automaticallyAcceptUnknownCertificate: true });
await certificateManager.initialize();
const client = c.OPCUAClient.create({ applicationName: "fanout-bench", applicationUri: "urn:fanout-bench:node-opcua",
  clientCertificateManager: certificateManager, endpointMustExist: false,
  securityMode: c.MessageSecurityMode.None, securityPolicy: c.SecurityPolicy.None,
  connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 }, requestedSessionTimeout: 60000,
  // a PublishResponse of 10,000 data changes is about 300 KB: allow it whole
  transportSettings: { maxMessageSize: 64 * 1024 * 1024, maxChunkCount: 1024 } });
await client.connect(endpoint);
const session = await client.createSession({ type: c.UserTokenType.Anonymous });
const namespaces = (await session.read({ nodeId: c.resolveNodeId("Server_NamespaceArray"),
  attributeId: c.AttributeIds.Value })).value.value;
const ns = namespaces.indexOf(namespaceUri);
if (ns < 0) throw new Error(`namespace ${namespaceUri} not served (${namespaces.join(", ")})`);

let hist = new Uint32Array(BUCKETS);
let notifications = 0;
let responses = 0;
let keepalives = 0;
let noTimestamp = 0;
let early = 0; // SourceTimestamp after the receipt (clock granularity): counted as 0 ms
let t0 = now();
let cpu0 = process.cpuUsage();

const sub = await session.createSubscription2({ requestedPublishingInterval: 100, requestedLifetimeCount: 600,
  requestedMaxKeepAliveCount: 10, maxNotificationsPerPublish: 0, publishingEnabled: true, priority: 1 });
sub.on("raw_notification", (message) => {
  const t = now();
  responses += 1;
  const data = message.notificationData || [];
  if (data.length === 0) {
    keepalives += 1;
    return;
  }
  for (const notification of data) {
    const items = notification?.monitoredItems;
    if (!items) continue;
    notifications += items.length;
    for (const item of items) {
      const ts = item.value?.sourceTimestamp;
      if (!ts) {
        noTimestamp += 1;
        continue;
      }
      let ms = t - ts.getTime();
      if (ms < 0) {
        early += 1;
        ms = 0;
      }
      hist[Math.min(BUCKETS - 1, Math.floor(ms / BUCKET_MS))] += 1;
    }
  }
});

const parameters = { samplingInterval: 0, queueSize: 1, discardOldest: true };
let failed = 0;
let revised = null;
for (let first = 0; first < count; first += 1000) {
  const items = [];
  for (let i = first; i < Math.min(count, first + 1000); i++) {
    items.push({ nodeId: c.coerceNodeId(`ns=${ns};s=D${Math.floor(i / perDevice)}.V${i % perDevice}`),
      attributeId: c.AttributeIds.Value });
  }
  const group = await sub.monitorItems(items, parameters, c.TimestampsToReturn.Both);
  for (const item of group.monitoredItems) {
    if (item.statusCode && item.statusCode.value !== 0) failed += 1;
    else if (revised === null && item.result) revised = item.result;
  }
}
say({ ready: true, items: count, failed, revisedSamplingInterval: revised?.revisedSamplingInterval ?? null,
  revisedQueueSize: revised?.revisedQueueSize ?? null, publishingInterval: sub.publishingInterval });

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = JSON.parse(line);
  if (cmd.cmd === "reset") {
    hist = new Uint32Array(BUCKETS);
    notifications = responses = keepalives = noTimestamp = early = 0;
    t0 = now();
    cpu0 = process.cpuUsage();
    say({ reset: true });
  } else if (cmd.cmd === "stats") {
    const seconds = (now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const latency = [];
    for (let i = 0; i < BUCKETS; i++) if (hist[i]) latency.push([i, hist[i]]);
    say({ seconds, notifications, responses, keepalives, noTimestamp, early, bucketMs: BUCKET_MS,
      cpuPct: ((cpu.user + cpu.system) / 1e6 / seconds) * 100, rssMb: process.memoryUsage().rss / 2 ** 20, latency });
  } else if (cmd.cmd === "quit") {
    break;
  }
}
try {
  await sub.terminate();
  await session.close();
  await client.disconnect();
} finally {
  await certificateManager.dispose();
  process.exit(0);
}
