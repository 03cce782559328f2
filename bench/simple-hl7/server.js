// An ACK-only MLLP server on simple-hl7: every message is answered AA with
// simple-hl7's own ACK, nothing else is done. `./dev.sh bench` measures the
// engine against it in the same run.
//
//   node server.js MLLP_PORT METRICS_PORT
//
// METRICS_PORT answers GET /metrics with the process's CPU seconds, in the
// name the engine uses too, so `izhub bench --baseline-cpu-from` reads both.
'use strict';
const http = require('http');
const hl7 = require('simple-hl7');

const mllpPort = Number(process.argv[2] || 2590);
const metricsPort = Number(process.argv[3] || 2591);

const app = hl7.tcp();
app.use((req, res) => res.end());
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => console.error('simple-hl7:', err.message));
app.start(mllpPort);

http
  .createServer((req, res) => {
    const u = process.cpuUsage();
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(`process_cpu_seconds_total ${(u.user + u.system) / 1e6}\n`);
  })
  .listen(metricsPort, '127.0.0.1');
