// Sends records through fluent-logger for Node.js (npm), an independent implementation of
// fluentd's forward protocol, the way an application uses it: handshake with the shared key
// (and user and password when given), acks required, optional TLS.
// Prints one JSON line, {"acked": N, "errors": [...]}, once every record is acked or failed.
//
//   node send.js '{"port": 24224, "sharedKey": "...", "mode": "PackedForward", "count": 100}'
'use strict';

const fs = require('fs');
const fluent = require('fluent-logger');

const options = JSON.parse(process.argv[2]);
const quiet = { info() {}, error(...args) { console.error(...args); } };
const sender = fluent.createFluentSender(options.tagPrefix, {
  host: '127.0.0.1',
  port: options.port,
  timeout: 10,
  eventMode: options.mode,
  requireAckResponse: true,
  ackResponseTimeout: 10000,
  flushInterval: 20,
  enableReconnect: false, // a refused handshake must fail the run, not be retried quietly
  security: {
    clientHostname: 'forward-peer.test',
    sharedKey: options.sharedKey,
    username: options.username || '',
    password: options.password || '',
  },
  tls: Boolean(options.ca),
  tlsOptions: options.ca ? { ca: fs.readFileSync(options.ca) } : {},
  internalLogger: quiet,
});

const errors = [];
let acked = 0;
let settled = 0;

function finish(code) {
  process.stdout.write(JSON.stringify({ acked, errors }) + '\n');
  process.exit(code);
}

// Never hang the test: whatever is not acked by then counts as lost.
setTimeout(() => finish(2), options.deadlineMs || 30000);
sender.on('error', (error) => errors.push(String(error)));

for (let n = 0; n < options.count; n++) {
  const time = new fluent.EventTime(1700000000 + n, 123456789);
  sender.emit(options.label, { n, mode: options.mode }, time, (error) => {
    if (error) {
      errors.push(String(error));
    } else {
      acked += 1;
    }
    settled += 1;
    if (settled === options.count) {
      sender.end();
      finish(errors.length ? 1 : 0);
    }
  });
}
