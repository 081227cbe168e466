#!/usr/bin/env node
// MQTT.js as a real peer of the broker: `node scenario.js --host H --port P [--protocol 4|5] NAME`
// (or `--url ws://H:P/mqtt` / `--url wss://... --ca CA.crt` for MQTT over WebSocket)
// runs one scenario and prints one JSON line of what it observed; tests/integration/test_mqttjs.py
// asserts it. Any error, unexpected close or the 10 s bound exits non-zero (with the cause on
// stderr). Payloads are reported as hex so that binary and empty ones compare exactly.
'use strict'

const fs = require('fs')
const mqtt = require('mqtt')

const SCENARIO_TIMEOUT_MS = 10000
// How long "nothing more arrives" is watched after a sentinel or a disconnect.
const QUIET_MS = 300

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 1883, url: null, ca: null, protocol: 4, scenario: null }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--host') args.host = argv[++i]
    else if (arg === '--port') args.port = Number(argv[++i])
    else if (arg === '--protocol') args.protocol = Number(argv[++i])
    else if (arg === '--url') args.url = argv[++i]
    else if (arg === '--ca') args.ca = argv[++i]
    else if (arg.startsWith('--')) throw new Error(`unknown option ${arg}`)
    else if (args.scenario === null) args.scenario = arg
    else throw new Error(`unexpected argument ${arg}`)
  }
  if (!args.scenario) throw new Error('usage: scenario.js --host H --port P [--protocol 4|5] NAME')
  if (![4, 5].includes(args.protocol)) throw new Error(`protocol must be 4 or 5, not ${args.protocol}`)
  if (!Number.isInteger(args.port) || args.port <= 0) throw new Error('--port must be a port number')
  return args
}

const ARGS = parseArgs(process.argv.slice(2))
const V5 = ARGS.protocol === 5
const opened = []

function fail(error) {
  process.stderr.write(`scenario ${ARGS.scenario} (protocol ${ARGS.protocol}) failed: ` +
    `${error && error.stack ? error.stack : error}\n`)
  for (const client of opened) {
    client.closing = true
    client.end(true)
  }
  process.exit(1)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function requireV5() {
  if (!V5) throw new Error(`scenario ${ARGS.scenario} is MQTT 5 only (--protocol 5)`)
}

// A connected MQTT.js client that records every message it receives. Resolves on CONNACK; a
// refused CONNACK, an error or a close before it rejects. After CONNACK any 'error' fails the run
// unless the scenario expects it.
function connect(clientId, options = {}) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(...(ARGS.url ? [ARGS.url] : []), {
      ...(ARGS.url ? {} : { host: ARGS.host, port: ARGS.port }),
      ...(ARGS.ca ? { ca: fs.readFileSync(ARGS.ca) } : {}),
      protocolVersion: ARGS.protocol,
      clientId,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      keepalive: 30,
      ...options,
    })
    opened.push(client)
    client.received = []
    client.sent = []
    client.on('message', (topic, payload, packet) => client.received.push({ topic, payload, packet }))
    client.on('packetsend', (packet) => client.sent.push(packet))
    let connected = false
    client.on('connect', (connack) => {
      connected = true
      client.connack = connack
      resolve(client)
    })
    client.on('error', (error) => (connected ? fail(error) : reject(error)))
    // Closes are the scenario's own doing (end(), destroy()); the broker closing first fails it.
    client.closing = false
    client.on('close', () => {
      if (!connected) reject(new Error(`${clientId}: connection closed before CONNACK`))
      else if (!client.closing) fail(new Error(`${clientId}: the broker closed the connection`))
    })
  })
}

function connackSummary(connack) {
  return {
    session_present: connack.sessionPresent,
    code: V5 ? (connack.reasonCode ?? 0) : connack.returnCode,
  }
}

function end(client) {
  client.closing = true
  return new Promise((resolve) => client.end(false, {}, () => resolve()))
}

// Closes the TCP connection without DISCONNECT, as a crash or a lost network would.
function destroy(client) {
  client.closing = true
  client.stream.destroy()
}

function subscribe(client, filter, options = { qos: 1 }) {
  return new Promise((resolve, reject) => {
    client.subscribe(filter, options, (error, granted) => {
      if (error) reject(error)
      else resolve(granted.map((g) => g.qos))
    })
  })
}

function unsubscribe(client, filter) {
  return new Promise((resolve, reject) => {
    client.unsubscribe(filter, (error, packet) => {
      if (error) reject(error)
      // MQTT 5 UNSUBACK reason codes (mqtt-packet names them `granted`); 3.1.1 has none.
      else resolve(packet && packet.granted ? packet.granted : null)
    })
  })
}

// Resolves once the PUBLISH is acknowledged (PUBACK / PUBCOMP; at once for QoS 0). Scenarios
// await each one: MQTT.js 5.16 does not hold QoS 1/2 publishes back to the server's Receive
// Maximum (CONNACK), so a burst of more unacknowledged ones than Culex's max_inflight_messages
// (20) ends with DISCONNECT 0x93 Receive Maximum exceeded, as MQTT 5 section 4.9 has the server do.
// (The callback gets MQTT.js's stored PUBLISH, not the PUBACK: reason codes are read from
// 'packetreceive' instead, see reasonCodes.)
function publish(client, topic, payload, options = {}) {
  return new Promise((resolve, reject) => {
    client.publish(topic, payload, options, (error) => (error ? reject(error) : resolve()))
  })
}

// What the scenario is waiting for, named in the timeout's message.
let waitingFor = null

async function waitFor(description, predicate) {
  waitingFor = description
  while (!predicate()) {
    await sleep(10)
  }
  waitingFor = null
}

async function waitForMessages(client, count) {
  await waitFor(`${count} messages`, () => client.received.length >= count)
}

function hex(buffer) {
  return Buffer.from(buffer).toString('hex')
}

function message(entry) {
  return {
    topic: entry.topic,
    payload: hex(entry.payload),
    qos: entry.packet.qos,
    retain: entry.packet.retain,
  }
}

function messages(client) {
  return client.received.map(message)
}

function publishedPackets(client) {
  return client.sent.filter((packet) => packet.cmd === 'publish')
}

// -- Scenarios, for --protocol 4 and 5 ------------------------------------------------------------

// Session Present across reconnects of a persistent session (3.1.1: Clean Session 0; MQTT 5:
// Clean Start 0 and a Session Expiry Interval, the session ending with the connection when the
// interval is 0).
async function session() {
  const steps = V5
    ? [
        ['clean start 0, expiry 60', { clean: false, properties: { sessionExpiryInterval: 60 } }],
        ['clean start 0, expiry 60', { clean: false, properties: { sessionExpiryInterval: 60 } }],
        ['clean start 1, expiry 60', { clean: true, properties: { sessionExpiryInterval: 60 } }],
        ['clean start 0, expiry 0', { clean: false, properties: { sessionExpiryInterval: 0 } }],
        ['clean start 0, expiry 60', { clean: false, properties: { sessionExpiryInterval: 60 } }],
      ]
    : [
        ['clean session 0', { clean: false }],
        ['clean session 0', { clean: false }],
        ['clean session 1', { clean: true }],
        ['clean session 0', { clean: false }],
      ]
  const connacks = []
  for (const [step, options] of steps) {
    const client = await connect('js-session', options)
    connacks.push({ step, ...connackSummary(client.connack) })
    if (connacks.length === 1) await subscribe(client, 'session/t', { qos: 1 })
    await end(client)
    // The broker handles the DISCONNECT before the next CONNECT arrives (not a takeover).
    await sleep(50)
  }
  return { connacks }
}

// A subscriber at each QoS receives a text, a binary (all 256 byte values) and an empty payload
// published at each QoS, delivered at min(published, granted) QoS, byte for byte.
async function qos() {
  const subs = {}
  const granted = {}
  for (const subQos of [0, 1, 2]) {
    subs[subQos] = await connect(`js-sub${subQos}`)
    granted[subQos] = await subscribe(subs[subQos], 'qos/+', { qos: subQos })
  }
  const pub = await connect('js-pub')
  const payloads = [Buffer.from('hello MQTT.js'), Buffer.from([...Array(256).keys()]), Buffer.alloc(0)]
  let sent = 0
  for (const pubQos of [0, 1, 2]) {
    for (const payload of payloads) {
      await publish(pub, `qos/${pubQos}`, payload, { qos: pubQos })
      sent += 1
      // One at a time: the order each subscriber reports is the order published.
      for (const sub of Object.values(subs)) await waitForMessages(sub, sent)
    }
  }
  const received = {}
  for (const [subQos, sub] of Object.entries(subs)) received[subQos] = messages(sub)
  return { granted, received }
}

// A retained message reaches a later subscriber with retain 1; a live one reaches a current
// subscriber with retain 0; an empty retained publish is delivered live and clears it.
async function retained() {
  const pub = await connect('js-pub')
  await publish(pub, 'retained/t', Buffer.from('kept'), { qos: 1, retain: true })
  const early = await connect('js-early')
  await subscribe(early, 'retained/#', { qos: 1 })
  await waitForMessages(early, 1)
  await publish(pub, 'retained/t', Buffer.from('live'), { qos: 1, retain: true })
  await waitForMessages(early, 2)
  await publish(pub, 'retained/t', Buffer.alloc(0), { qos: 1, retain: true })
  await waitForMessages(early, 3)
  const late = await connect('js-late')
  await subscribe(late, 'retained/#', { qos: 1 })
  // Retained messages go out right after the SUBACK: the sentinel comes after any of them.
  await publish(pub, 'retained/sentinel', Buffer.from('end'), { qos: 1 })
  await waitForMessages(late, 1)
  await waitForMessages(early, 4)
  return { early: messages(early), late: messages(late) }
}

// `+` and `#` filters, each on its own client (no overlapping subscriptions in one session).
async function wildcards() {
  const filters = ['wild/+/temp', 'wild/#', '+/+/+']
  const subs = {}
  for (const filter of filters) {
    subs[filter] = await connect(`js-${filters.indexOf(filter)}`)
    await subscribe(subs[filter], filter, { qos: 1 })
  }
  const pub = await connect('js-pub')
  const topics = ['wild/kitchen/temp', 'wild/kitchen/humidity', 'wild/a/b/temp', 'wild',
    'other/kitchen/temp', 'wild/sentinel/temp']
  for (const topic of topics) await publish(pub, topic, Buffer.from(topic), { qos: 1 })
  const received = {}
  for (const [filter, sub] of Object.entries(subs)) {
    await waitFor('sentinel', () => sub.received.some((m) => m.topic === 'wild/sentinel/temp'))
    received[filter] = sub.received.map((m) => m.topic)
  }
  return { received }
}

// After UNSUBSCRIBE (acknowledged) nothing more arrives on that filter; the other stays.
async function unsubscribeScenario() {
  const sub = await connect('js-sub')
  await subscribe(sub, 'unsub/a', { qos: 1 })
  await subscribe(sub, 'unsub/b', { qos: 1 })
  const pub = await connect('js-pub')
  await publish(pub, 'unsub/a', Buffer.from('before'), { qos: 1 })
  await waitForMessages(sub, 1)
  const unsuback = await unsubscribe(sub, 'unsub/a')
  const result = {}
  if (V5) {
    result.unsuback = unsuback
    // MQTT 5: 0x11 No subscription existed.
    result.unsuback_never_subscribed = await unsubscribe(sub, 'unsub/never')
  }
  await publish(pub, 'unsub/a', Buffer.from('after'), { qos: 1 })
  await publish(pub, 'unsub/b', Buffer.from('sentinel'), { qos: 1 })
  await waitFor('sentinel', () => sub.received.some((m) => m.topic === 'unsub/b'))
  await sleep(QUIET_MS)
  result.received = messages(sub)
  return result
}

// The will is published when the socket is destroyed without DISCONNECT, not after end().
async function will() {
  const watcher = await connect('js-watcher')
  await subscribe(watcher, 'will/#', { qos: 1 })
  const willOf = (name) => ({
    topic: `will/${name}`,
    payload: Buffer.from(`${name} is gone`),
    qos: 1,
    retain: false,
    ...(V5 ? { properties: { contentType: 'text/plain', userProperties: { who: name } } } : {}),
  })
  const polite = await connect('js-polite', { will: willOf('polite') })
  await end(polite)
  await sleep(QUIET_MS)
  const crashed = await connect('js-crashed', { will: willOf('crashed') })
  destroy(crashed)
  await waitForMessages(watcher, 1)
  await sleep(QUIET_MS)
  const received = watcher.received.map((entry) => ({
    ...message(entry),
    ...(V5
      ? {
          content_type: entry.packet.properties?.contentType ?? null,
          user_properties: entry.packet.properties?.userProperties ?? null,
        }
      : {}),
  }))
  return { received }
}

// A persistent session gets the QoS 1 and 2 messages published while it was away, then live ones.
async function offline() {
  const persistent = V5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false }
  const first = await connect('js-offline', persistent)
  const granted = await subscribe(first, 'offline/t', { qos: 2 })
  await end(first)
  await sleep(50)
  const pub = await connect('js-pub')
  await publish(pub, 'offline/t', Buffer.from('away qos1'), { qos: 1 })
  await publish(pub, 'offline/t', Buffer.from('away qos2'), { qos: 2 })
  const back = await connect('js-offline', persistent)
  await waitForMessages(back, 2)
  await publish(pub, 'offline/t', Buffer.from('live'), { qos: 1 })
  await waitForMessages(back, 3)
  await sleep(QUIET_MS)
  return { granted, ...connackSummary(back.connack), received: messages(back) }
}

// -- MQTT 5 only -------------------------------------------------------------------------------------

function propertiesOf(packet) {
  const properties = { ...(packet.properties || {}) }
  for (const [key, value] of Object.entries(properties)) {
    if (Buffer.isBuffer(value)) properties[key] = hex(value)
  }
  return properties
}

// User Properties (repeated keys, in order), Content Type, Payload Format Indicator, Response
// Topic, Correlation Data (binary) and Message Expiry Interval reach the subscriber.
async function properties() {
  requireV5()
  const sub = await connect('js-sub')
  await subscribe(sub, 'props/t', { qos: 1 })
  const pub = await connect('js-pub')
  await publish(pub, 'props/t', Buffer.from('{"t": 21.5}'), {
    qos: 1,
    properties: {
      payloadFormatIndicator: true,
      messageExpiryInterval: 120,
      contentType: 'application/json',
      responseTopic: 'props/reply',
      correlationData: Buffer.from([0, 1, 2, 0xfe, 0xff]),
      userProperties: { unit: 'celsius', tag: ['a', 'b'] },
    },
  })
  await publish(pub, 'props/t', Buffer.from('bare'), { qos: 1 })
  await waitForMessages(sub, 2)
  return { received: sub.received.map((m) => ({ ...message(m), properties: propertiesOf(m.packet) })) }
}

// Request/response: the responder answers on the Response Topic with the Correlation Data.
async function requestResponse() {
  requireV5()
  const responder = await connect('js-responder')
  responder.on('message', (topic, payload, packet) => {
    const { responseTopic, correlationData } = packet.properties || {}
    responder.publish(responseTopic, Buffer.concat([Buffer.from('re: '), payload]),
      { qos: 1, properties: { correlationData } })
  })
  await subscribe(responder, 'service/request', { qos: 1 })
  const requester = await connect('js-requester')
  await subscribe(requester, 'service/reply/js-requester', { qos: 1 })
  for (const id of [1, 2]) {
    await publish(requester, 'service/request', Buffer.from(`ping ${id}`), {
      qos: 1,
      properties: { responseTopic: 'service/reply/js-requester', correlationData: Buffer.from(`req-${id}`) },
    })
    await waitForMessages(requester, id)
  }
  return {
    replies: requester.received.map((m) => ({
      ...message(m),
      correlation_data: m.packet.properties?.correlationData?.toString() ?? null,
    })),
  }
}

// Message Expiry Interval: a message that expires while its session is offline is dropped; one
// with time left is delivered with the interval reduced by the time it waited.
async function messageExpiry() {
  requireV5()
  const persistent = { clean: false, properties: { sessionExpiryInterval: 300 } }
  const first = await connect('js-expiry', persistent)
  await subscribe(first, 'expiry/t', { qos: 1 })
  await end(first)
  const pub = await connect('js-pub')
  await publish(pub, 'expiry/t', Buffer.from('short'), { qos: 1, properties: { messageExpiryInterval: 1 } })
  await publish(pub, 'expiry/t', Buffer.from('long'), { qos: 1, properties: { messageExpiryInterval: 60 } })
  await sleep(2200)
  const back = await connect('js-expiry', persistent)
  await subscribe(back, 'expiry/sentinel', { qos: 1 })
  await publish(pub, 'expiry/sentinel', Buffer.from('end'), { qos: 1 })
  await waitFor('sentinel', () => back.received.some((m) => m.topic === 'expiry/sentinel'))
  return {
    session_present: back.connack.sessionPresent,
    received: back.received.map((m) => ({
      topic: m.topic,
      payload: m.payload.toString(),
      message_expiry_interval: m.packet.properties?.messageExpiryInterval ?? null,
    })),
  }
}

// Topic aliases both ways. To the broker: MQTT.js's autoAssignTopicAlias (it picks the alias
// itself) and autoUseTopicAlias (reuses an alias the application set once). From the broker: the
// subscriber's CONNECT allows 5 aliases, and the broker sends topic + alias once, then alias only.
async function topicAlias() {
  requireV5()
  const sub = await connect('js-sub', { properties: { topicAliasMaximum: 5 } })
  await subscribe(sub, 'alias/#', { qos: 1 })
  const assigner = await connect('js-assign', { autoAssignTopicAlias: true })
  const user = await connect('js-use', { autoUseTopicAlias: true })
  for (const n of [1, 2, 3]) {
    await publish(assigner, 'alias/auto', Buffer.from(`auto ${n}`), { qos: 1 })
  }
  await publish(user, 'alias/use', Buffer.from('use 1'), { qos: 1, properties: { topicAlias: 4 } })
  await publish(user, 'alias/use', Buffer.from('use 2'), { qos: 1 })
  await publish(user, 'alias/use', Buffer.from('use 3'), { qos: 1 })
  await waitForMessages(sub, 6)
  const wire = (packet) => ({ topic: packet.topic, topic_alias: packet.properties?.topicAlias ?? null })
  return {
    broker_topic_alias_maximum: assigner.connack.properties?.topicAliasMaximum ?? null,
    assigner_sent: publishedPackets(assigner).map(wire),
    user_sent: publishedPackets(user).map(wire),
    received: sub.received.map((m) => ({ topic: m.topic, payload: m.payload.toString(), wire: wire(m.packet) })),
  }
}

// Subscription Identifiers (one byte, several bytes, none) come back on matching messages.
async function subscriptionIdentifier() {
  requireV5()
  const sub = await connect('js-sub')
  await subscribe(sub, 'sid/a/+', { qos: 1, properties: { subscriptionIdentifier: 7 } })
  await subscribe(sub, 'sid/b/#', { qos: 1, properties: { subscriptionIdentifier: 300000 } })
  await subscribe(sub, 'sid/c', { qos: 1 })
  const pub = await connect('js-pub')
  for (const topic of ['sid/a/x', 'sid/b/y/z', 'sid/c']) await publish(pub, topic, Buffer.from(topic), { qos: 1 })
  await waitForMessages(sub, 3)
  return {
    received: sub.received.map((m) => ({
      topic: m.topic,
      subscription_identifier: m.packet.properties?.subscriptionIdentifier ?? null,
    })),
  }
}

// No Local: a client's own PUBLISH does not come back on a No Local subscription, but does on
// an ordinary one; other clients' messages do.
async function noLocal() {
  requireV5()
  const client = await connect('js-self')
  await subscribe(client, 'nolocal/t', { qos: 1, nl: true })
  await subscribe(client, 'nolocal/echo', { qos: 1 })
  await publish(client, 'nolocal/t', Buffer.from('mine'), { qos: 1 })
  await publish(client, 'nolocal/echo', Buffer.from('echo'), { qos: 1 })
  await waitForMessages(client, 1)
  const other = await connect('js-other')
  await publish(other, 'nolocal/t', Buffer.from('theirs'), { qos: 1 })
  await waitForMessages(client, 2)
  await sleep(QUIET_MS)
  return { received: client.received.map((m) => [m.topic, m.payload.toString()]) }
}

// Retain As Published: with rap the live retained message keeps retain 1, without it retain 0;
// retained messages sent on SUBSCRIBE have retain 1 either way.
async function retainAsPublished() {
  requireV5()
  const pub = await connect('js-pub')
  await publish(pub, 'rap/t', Buffer.from('stored'), { qos: 1, retain: true })
  const withRap = await connect('js-rap')
  await subscribe(withRap, 'rap/t', { qos: 1, rap: true })
  const withoutRap = await connect('js-norap')
  await subscribe(withoutRap, 'rap/t', { qos: 1, rap: false })
  await publish(pub, 'rap/t', Buffer.from('live retained'), { qos: 1, retain: true })
  await publish(pub, 'rap/t', Buffer.from('live plain'), { qos: 1 })
  await waitForMessages(withRap, 3)
  await waitForMessages(withoutRap, 3)
  const summary = (client) => client.received.map((m) => [m.payload.toString(), m.packet.retain])
  return { rap: summary(withRap), no_rap: summary(withoutRap) }
}

// Retain Handling: 0 sends retained messages on every SUBSCRIBE, 1 only when the subscription is
// new, 2 never. Each client subscribes twice, then a live message ends the run.
async function retainHandling() {
  requireV5()
  const pub = await connect('js-pub')
  await publish(pub, 'rh/t', Buffer.from('stored'), { qos: 1, retain: true })
  const subs = {}
  for (const rh of [0, 1, 2]) {
    subs[rh] = await connect(`js-rh${rh}`)
    await subscribe(subs[rh], 'rh/t', { qos: 1, rh })
    await subscribe(subs[rh], 'rh/t', { qos: 1, rh })
  }
  await publish(pub, 'rh/t', Buffer.from('live'), { qos: 1 })
  const received = {}
  for (const [rh, sub] of Object.entries(subs)) {
    await waitFor('live', () => sub.received.some((m) => m.payload.toString() === 'live'))
    received[rh] = sub.received.map((m) => [m.payload.toString(), m.packet.retain])
  }
  return { received }
}

// A shared subscription's members get each message exactly once between them; an ordinary
// subscriber to the same topic gets every one.
async function shared() {
  requireV5()
  const members = [await connect('js-member1'), await connect('js-member2')]
  for (const member of members) await subscribe(member, '$share/g/shared/t', { qos: 1 })
  const plain = await connect('js-plain')
  await subscribe(plain, 'shared/t', { qos: 1 })
  const pub = await connect('js-pub')
  const count = 10
  for (let i = 0; i < count; i++) await publish(pub, 'shared/t', Buffer.from(String(i)), { qos: 1 })
  await waitFor('all shared', () => members[0].received.length + members[1].received.length >= count)
  await waitForMessages(plain, count)
  await sleep(QUIET_MS)
  const payloads = (client) => client.received.map((m) => Number(m.payload.toString()))
  return {
    members: members.map(payloads),
    topics: [...new Set(members.flatMap((m) => m.received.map((r) => r.topic)))],
    plain: payloads(plain),
  }
}

// Reason codes: PUBACK/PUBREC 0x10 No matching subscribers (0x00 when there are some), SUBACK
// 0x8F Topic Filter invalid for `a/#/b` next to a granted filter, and the connection stays usable.
async function reasonCodes() {
  requireV5()
  const client = await connect('js-rc')
  const acks = []
  client.on('packetreceive', (packet) => {
    if (['puback', 'pubrec', 'pubcomp', 'suback'].includes(packet.cmd)) {
      acks.push({ cmd: packet.cmd, reason_code: packet.reasonCode ?? 0, granted: packet.granted ?? null })
    }
  })
  await publish(client, 'rc/nobody', Buffer.from('q1'), { qos: 1 })
  await publish(client, 'rc/nobody', Buffer.from('q2'), { qos: 2 })
  const granted = await subscribe(client, 'rc/ok', { qos: 1 })
  await publish(client, 'rc/ok', Buffer.from('q1'), { qos: 1 })
  await waitForMessages(client, 1)
  // MQTT.js refuses to send an invalid filter itself (validations.validateTopics: "Invalid topic
  // a/#/b"), so this SUBSCRIBE goes through its packet writer directly, with a packet id it has
  // not allocated elsewhere; its SUBACK is then seen through 'packetreceive' only.
  client._sendPacket({
    cmd: 'subscribe',
    messageId: client.messageIdProvider.allocate(),
    subscriptions: [{ topic: 'rc/valid', qos: 1 }, { topic: 'a/#/b', qos: 1 }],
    properties: {},
  })
  await waitFor('second SUBACK', () => acks.filter((a) => a.cmd === 'suback').length >= 2)
  await publish(client, 'rc/valid', Buffer.from('still connected'), { qos: 1 })
  await waitForMessages(client, 2)
  return {
    granted,
    acks: acks.map(({ cmd, reason_code, granted: g }) => (cmd === 'suback' ? { cmd, granted: g } : { cmd, reason_code })),
    received: client.received.map((m) => [m.topic, m.payload.toString()]),
  }
}

const SCENARIOS = {
  session,
  qos,
  retained,
  wildcards,
  unsubscribe: unsubscribeScenario,
  will,
  offline,
  properties,
  'request-response': requestResponse,
  'message-expiry': messageExpiry,
  'topic-alias': topicAlias,
  'subscription-identifier': subscriptionIdentifier,
  'no-local': noLocal,
  'retain-as-published': retainAsPublished,
  'retain-handling': retainHandling,
  shared,
  'reason-codes': reasonCodes,
}

async function main() {
  const run = SCENARIOS[ARGS.scenario]
  if (!run) throw new Error(`unknown scenario ${ARGS.scenario}; one of ${Object.keys(SCENARIOS).join(', ')}`)
  const timer = setTimeout(() => fail(new Error(
    `timed out after ${SCENARIO_TIMEOUT_MS} ms${waitingFor ? ` waiting for ${waitingFor}` : ''}`)), SCENARIO_TIMEOUT_MS)
  const observed = await run()
  for (const client of opened) if (client.connected) await end(client)
  clearTimeout(timer)
  process.stdout.write(JSON.stringify({ scenario: ARGS.scenario, protocol: ARGS.protocol, ...observed }) + '\n')
  process.exit(0)
}

main().catch(fail)
