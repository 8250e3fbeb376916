// node-opcua's own server loading the standard nodeset plus a site: the reference bench_load.py measures
// the gateway's start against (the benchmark times process start until its client browses the site's last
// node, the same check the gateway gets).
// Usage: NODE_OPCUA_DIR=<folder with node_modules/node-opcua-server> node load_reference_server.mjs PORT SITE.xml
// Prints "@@{"initialisedMs": ..., "servingMs": ...}" (since the process started) once it serves; stops on
// stdin's end.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_OPCUA_DIR, "package.json"));
const { OPCUAServer } = require("node-opcua-server");
const { nodesets } = require("node-opcua-nodesets");

const [port, site] = [Number(process.argv[2]), process.argv[3]];
const server = new OPCUAServer({ port, hostname: "127.0.0.1", allowAnonymous: true,
  nodesets: [nodesets.standard, site] });
await server.initialize();
const initialisedMs = performance.now();
await server.start();
console.log(`@@${JSON.stringify({ initialisedMs, servingMs: performance.now() })}`);
process.stdin.resume();
process.stdin.on("end", async () => {
  await server.shutdown(0);
  process.exit(0);
});
