// node-opcua's own server with the fan-out site of bench_fanout.py: the reference it is measured against.
// Usage: NODE_OPCUA_DIR=<folder with node_modules/node-opcua-server> node fanout_reference_server.mjs \
//          PORT VARIABLES PER_DEVICE INTERVAL_MS
// Serves VARIABLES Double variables D<d>.V<v> (nodeId s=D<d>.V<v>, d = i / PER_DEVICE) under objects D<d>
// in urn:bench:fanout:reference, and every INTERVAL_MS rewrites all of them (a sine per variable, source
// timestamp now), so every rewrite is a change. Prints "serving" when ready; answers each line on stdin
// with "@@{rewrites, rewriteMsMax}" (rewrite passes done, the longest pass since the last answer); stops
// on stdin's end.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_OPCUA_DIR, "package.json"));
const { OPCUAServer } = require("node-opcua-server");
const { DataType, Variant } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");

const [port, count, perDevice, intervalMs] = process.argv.slice(2).map(Number);

const server = new OPCUAServer({
  port, hostname: "127.0.0.1", allowAnonymous: true,
  maxConnectionsPerEndpoint: 50, serverCapabilities: { maxSessions: 50 },
});
await server.initialize();
const addressSpace = server.engine.addressSpace;
const ns = addressSpace.registerNamespace("urn:bench:fanout:reference");
const objects = addressSpace.rootFolder.objects;
const variables = [];
let device = null;
for (let i = 0; i < count; i++) {
  const d = Math.floor(i / perDevice);
  if (i % perDevice === 0) device = ns.addObject({ nodeId: `s=D${d}`, browseName: `D${d}`, organizedBy: objects });
  variables.push(ns.addVariable({ nodeId: `s=D${d}.V${i % perDevice}`, browseName: `V${i % perDevice}`,
    componentOf: device, dataType: "Double", value: { dataType: DataType.Double, value: 0 } }));
}
const started = Date.now();
let rewrites = 0;
let rewriteMsMax = 0;
setInterval(() => {
  const t = performance.now();
  const now = new Date();
  const phase = (2 * Math.PI * (now.getTime() - started)) / 10_000;
  for (let i = 0; i < variables.length; i++) {
    const value = 50 + 10 * Math.sin(phase + (2 * Math.PI * i) / variables.length);
    variables[i].setValueFromSource(new Variant({ dataType: DataType.Double, value }), StatusCodes.Good, now);
  }
  rewrites += 1;
  rewriteMsMax = Math.max(rewriteMsMax, performance.now() - t);
}, intervalMs);
await server.start();
console.log("serving");
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  for (let k = chunk.split("\n").length - 1; k > 0; k--) {
    process.stdout.write(`@@${JSON.stringify({ rewrites, rewriteMsMax })}\n`);
    rewriteMsMax = 0;
  }
});
process.stdin.on("end", async () => {
  await server.shutdown(100);
  process.exit(0);
});
