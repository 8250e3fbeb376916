// An independent OPC UA client for the gateway's interop tests, driven by a JSON script.
// Usage: node ua_client.mjs < script.json   ->  one JSON document on stdout.
// Script: {endpoint, pkiDir, securityMode: "None"|"Sign"|"SignAndEncrypt", securityPolicy: "None"|
// "Basic256Sha256"|..., user?, password?, timeoutMs?, ops: [{op: "browse"|"read"|"write"|"subscribe"|
// "subscribeMany"|"historyRead"|"installAlarms"|"waitAlarm"|"acknowledge"|"confirm"|"rawRefresh", ...}]}. Every status
// is reported as {name, value} so tests compare numeric codes. The alarm ops use node-opcua's own
// alarm helpers (installAlarmMonitoring, ClientAlarmList, acknowledgeCondition, confirmCondition,
// callConditionRefresh) as a SCADA client would.
import {
  AttributeIds, ClientMonitoredItem, DataChangeFilter, DataChangeTrigger, DataType, DeadbandType, MessageSecurityMode,
  OPCUAClient, SecurityPolicy, TimestampsToReturn, UserTokenType, acknowledgeCondition, callConditionRefresh,
  confirmCondition, constructEventFilter, installAlarmMonitoring, ofType, resolveNodeId,
} from "node-opcua-client";
import { OPCUACertificateManager } from "node-opcua-certificate-manager";

const status = (s) => ({ name: s.name, value: s.value });
const iso = (d) => (d ? d.toISOString() : null);
const dataValue = (dv) => ({
  status: status(dv.statusCode),
  value: dv.value ? (ArrayBuffer.isView(dv.value.value) ? Array.from(dv.value.value) : dv.value.value) : null,
  dataType: dv.value ? DataType[dv.value.dataType] : null,
  sourceTimestamp: iso(dv.sourceTimestamp),
  serverTimestamp: iso(dv.serverTimestamp),
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const alarmJson = (a) => ({
  conditionId: a.conditionId.toString(), eventType: a.eventType.toString(), eventId: a.eventId.toString("hex"),
  message: a.fields.message?.value?.text ?? null, severity: a.fields.severity?.value ?? null,
  retain: a.fields.retain?.value ?? null, active: a.fields.activeState?.id?.value ?? null,
  acked: a.fields.ackedState?.id?.value ?? null, confirmed: a.fields.confirmedState?.id?.value ?? null,
  sourceName: a.fields.sourceName?.value ?? null,
});
const ctx = { alarms: null, seen: {} };

async function waitAlarm(op) {
  const deadline = Date.now() + (op.timeoutMs ?? 5000);
  while (Date.now() < deadline) {
    const alarm = ctx.alarms.alarms().find((a) => a.conditionId.toString() === op.conditionId);
    if (alarm) {
      const j = alarmJson(alarm);
      if (Object.entries(op.where ?? {}).every(([k, v]) => j[k] === v)) return { alarm, j };
    }
    await sleep(20);
  }
  return { alarm: null, j: null };
}

async function runOp(session, op) {
  switch (op.op) {
    case "installAlarms": {
      ctx.alarms = await installAlarmMonitoring(session);
      await sleep(op.settleMs ?? 1000);
      return { alarms: ctx.alarms.alarms().map(alarmJson) };
    }
    case "waitAlarm": {
      const { alarm, j } = await waitAlarm(op);
      if (alarm) ctx.seen[op.save ?? "last"] = alarm.eventId;
      return { found: alarm !== null, alarm: j, all: ctx.alarms.alarms().map(alarmJson) };
    }
    case "acknowledge":
    case "confirm": {
      const eventId = op.eventIdHex ? Buffer.from(op.eventIdHex, "hex") : ctx.seen[op.saved ?? "last"];
      const call = op.op === "acknowledge" ? acknowledgeCondition : confirmCondition;
      return { status: status(await call(session, op.conditionId, eventId, op.comment ?? "")) };
    }
    case "rawRefresh": {
      // A plain event subscription with its own select clauses, then ConditionRefresh on it: what
      // arrives between RefreshStart and RefreshEnd.
      const sub = await session.createSubscription2({ requestedPublishingInterval: 100, requestedLifetimeCount: 100,
        requestedMaxKeepAliveCount: 10, publishingEnabled: true });
      const fields = ["EventType", "SourceName", "Message", "Retain", "ConditionId"];
      const where = op.ofType ? ofType(resolveNodeId(op.ofType)) : undefined;
      const item = await sub.monitor({ nodeId: resolveNodeId("Server"), attributeId: AttributeIds.EventNotifier },
        { samplingInterval: 0, queueSize: 1000, filter: constructEventFilter(fields, where) }, TimestampsToReturn.Both);
      const events = [];
      item.on("changed", (values) => events.push({ eventType: values[0].value.toString(), sourceName: values[1].value,
        message: values[2].value?.text ?? null, retain: values[3].value, conditionId: values[4].value?.toString() ?? null }));
      await sleep(300);
      events.length = 0;
      const s = await callConditionRefresh(session, sub.subscriptionId);
      const deadline = Date.now() + (op.timeoutMs ?? 5000);
      while (Date.now() < deadline && !events.some((e) => e.eventType === "ns=0;i=2788")) await sleep(20);
      await sub.terminate();
      return { status: status(s), events };
    }
    case "browse": {
      const r = await session.browse(op.nodeId);
      return { status: status(r.statusCode), references: r.references.map((ref) => ({
        browseName: ref.browseName.toString(), nodeId: ref.nodeId.toString(), nodeClass: ref.nodeClass })) };
    }
    case "read":
      return dataValue(await session.read({ nodeId: op.nodeId, attributeId: AttributeIds[op.attribute ?? "Value"] }));
    case "write": {
      const s = await session.write({ nodeId: op.nodeId, attributeId: AttributeIds.Value,
        value: { value: { dataType: DataType[op.dataType], value: op.value } } });
      return { status: status(s) };
    }
    case "subscribe": {
      const sub = await session.createSubscription2({ requestedPublishingInterval: op.publishingInterval ?? 100,
        requestedLifetimeCount: 100, requestedMaxKeepAliveCount: 10, publishingEnabled: true });
      const item = ClientMonitoredItem.create(sub, { nodeId: op.nodeId, attributeId: AttributeIds.Value },
        { samplingInterval: op.samplingInterval ?? 100, queueSize: 10, discardOldest: true }, TimestampsToReturn.Both);
      const changes = [];
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, op.timeoutMs ?? 5000);
        item.on("changed", (dv) => {
          changes.push(dataValue(dv));
          if (changes.length >= (op.count ?? 3)) { clearTimeout(timer); resolve(); }
        });
      });
      await sub.terminate();
      return { revisedPublishingInterval: sub.publishingInterval, changes };
    }
    case "subscribeMany": {
      // One subscription, several items with their own deadbands, writes made while it runs: what each
      // item reported, its revised sampling interval, and the status of a refused one.
      const sub = await session.createSubscription2({ requestedPublishingInterval: 100, requestedLifetimeCount: 100,
        requestedMaxKeepAliveCount: 10, maxNotificationsPerPublish: op.maxNotificationsPerPublish ?? 0,
        publishingEnabled: true });
      const items = [];
      for (const spec of op.items) {
        const filter = spec.deadbandType ? new DataChangeFilter({ trigger: DataChangeTrigger.StatusValue,
          deadbandType: DeadbandType[spec.deadbandType], deadbandValue: spec.deadbandValue }) : null;
        const rec = { nodeId: spec.nodeId, values: [] };
        try {
          const item = await sub.monitor({ nodeId: spec.nodeId, attributeId: AttributeIds.Value },
            { samplingInterval: spec.samplingInterval ?? 0, queueSize: spec.queueSize ?? 10, discardOldest: true, filter },
            TimestampsToReturn.Both);
          item.on("changed", (dv) => rec.values.push(dv.value.value));
          rec.status = status(item.statusCode);
          rec.revisedSamplingInterval = item.result?.revisedSamplingInterval ?? null;
        } catch (err) {
          rec.status = { name: err.message, value: null };
        }
        items.push(rec);
      }
      const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
      await pause(op.settleMs ?? 500);
      for (const w of op.writes ?? []) {
        await session.write({ nodeId: w.nodeId, attributeId: AttributeIds.Value,
          value: { value: { dataType: DataType[w.dataType], value: w.value } } });
        await pause(w.afterMs ?? 300);
      }
      await pause(op.waitMs ?? 500);
      await sub.terminate();
      return { items };
    }
    case "historyRead": {
      const r = await session.readHistoryValue({ nodeId: op.nodeId }, new Date(op.start), new Date(op.end),
        { numValuesPerNode: op.numValuesPerNode ?? 0, returnBounds: false, timestampsToReturn: TimestampsToReturn.Both });
      return { status: status(r.statusCode), continuationPoint: r.continuationPoint ? r.continuationPoint.toString("hex") : null,
        values: (r.historyData?.dataValues ?? []).map(dataValue) };
    }
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

async function main(script) {
  const certificateManager = new OPCUACertificateManager({ rootFolder: script.pkiDir,
    automaticallyAcceptUnknownCertificate: true });  // trust of the *server* is not what these tests check
  await certificateManager.initialize();
  const client = OPCUAClient.create({
    applicationName: "gateway-interop", applicationUri: "urn:gateway-interop:node-opcua",
    clientCertificateManager: certificateManager, endpointMustExist: false,
    securityMode: MessageSecurityMode[script.securityMode ?? "None"],
    securityPolicy: SecurityPolicy[script.securityPolicy ?? "None"],
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    requestedSessionTimeout: 30000,
  });
  const out = { connected: false, ops: [] };
  try {
    await client.connect(script.endpoint);
    out.connected = true;
    const identity = script.user ? { type: UserTokenType.UserName, userName: script.user, password: script.password }
      : { type: UserTokenType.Anonymous };
    let session;
    try {
      session = await client.createSession(identity);
    } catch (err) {
      out.sessionError = { message: err.message, status: err.response?.responseHeader?.serviceResult?.name ?? null };
      return out;
    }
    out.session = true;
    for (const op of script.ops ?? []) {
      try {
        out.ops.push({ op: op.op, ...(await runOp(session, op)) });
      } catch (err) {
        out.ops.push({ op: op.op, error: err.message });
      }
    }
    await session.close();
  } catch (err) {
    out.connectError = { message: err.message };
  } finally {
    await client.disconnect();
    await certificateManager.dispose();
  }
  out.clientCertificate = `${script.pkiDir}/own/certs/client_certificate.pem`;
  return out;
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const script = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const guard = setTimeout(() => { console.log(JSON.stringify({ error: "timeout" })); process.exit(3); },
  script.timeoutMs ?? 30000);
main(script).then((out) => { clearTimeout(guard); console.log(JSON.stringify(out)); process.exit(0); },
  (err) => { clearTimeout(guard); console.log(JSON.stringify({ error: err.message })); process.exit(1); });
