// node-opcua's own server with the alarm flood site of bench_alarms.py: the reference it is measured against.
// Usage: NODE_OPCUA_DIR=<folder with node_modules/node-opcua-server> node alarm_reference_server.mjs PORT DEVICES PER_DEVICE
// Serves D<d>.V<v> (Double, written by anyone) under objects D<d> that notify the Server object, each
// watched by an ExclusiveLimitAlarmType D<d>.V<v>Limit (high 50, low -50, severity 500) evaluated by
// node-opcua on every change of its input. Prints "serving" when ready; stops on stdin EOF.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.NODE_OPCUA_DIR, "package.json"));
const { OPCUAServer } = require("node-opcua-server");
const { DataType } = require("node-opcua-variant");
const { AccessLevelFlag } = require("node-opcua-data-model");

const [port, devices, perDevice] = process.argv.slice(2).map(Number);

const server = new OPCUAServer({
  port, hostname: "127.0.0.1", allowAnonymous: true,
  maxConnectionsPerEndpoint: 20, serverCapabilities: { maxSessions: 20 },
});
await server.initialize();
const addressSpace = server.engine.addressSpace;
addressSpace.installAlarmsAndConditionsService();
const ns = addressSpace.registerNamespace("urn:bench:alarms:reference");
const objects = addressSpace.rootFolder.objects;
for (let d = 0; d < devices; d++) {
  const device = ns.addObject({ nodeId: `s=D${d}`, browseName: `D${d}`, organizedBy: objects,
    notifierOf: objects.server });
  for (let v = 0; v < perDevice; v++) {
    const input = ns.addVariable({ nodeId: `s=D${d}.V${v}`, browseName: `V${v}`, componentOf: device,
      dataType: "Double", value: { dataType: DataType.Double, value: 0 },
      accessLevel: AccessLevelFlag.CurrentRead | AccessLevelFlag.CurrentWrite,
      userAccessLevel: AccessLevelFlag.CurrentRead | AccessLevelFlag.CurrentWrite,
      eventSourceOf: device });
    ns.instantiateExclusiveLimitAlarm("ExclusiveLimitAlarmType", { nodeId: `s=D${d}.V${v}Limit`,
      browseName: `V${v}Limit`, componentOf: device, conditionSource: input, inputNode: input,
      highLimit: 50, lowLimit: -50, severity: 500 });
  }
}
await server.start();
console.log("serving");
process.stdin.resume();
process.stdin.on("end", async () => { await server.shutdown(100); process.exit(0); });
