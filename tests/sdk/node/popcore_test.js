#!/usr/bin/env node
// pop-core (@alicloud/pop-core, Node) driver for the CPFS SDK compatibility
// suite.  pytest (tests/sdk/test_sdk_compat.py) runs it once per API call:
//
//   echo '{"endpoint": "http://127.0.0.1:8080", "accessKeyId": "...",
//          "accessKeySecret": "...", "action": "DescribeZones",
//          "params": {"RegionId": "cn-hangzhou"}, "method": "POST"}' \
//     | node popcore_test.js
//
// Request fields:
//   endpoint, accessKeyId, accessKeySecret, action, params  (required)
//   method     "GET" (pop-core's default) or "POST" (all parameters in a
//              form body)
//   https      true: do not verify the server certificate (self-signed)
//   nonce      make pop-core's nonce generator return this fixed value
//   timestamp  send this Timestamp instead of the current time (pop-core
//              lets caller parameters override its defaults)
//
// It prints exactly one JSON line on stdout:
//   {"ok": true,  "status": <HTTP status>, "body": <parsed JSON reply>}
//   {"ok": false, "transport": false, "status": <HTTP status>, "code": ...,
//    "name": ..., "message": ..., "data": <error body>}   (an API error)
//   {"ok": false, "transport": true, ...}   (no usable reply: connection
//    refused, TLS failure, a body that is not JSON, ...)
// and exits 0 in both cases; a non-zero exit means the driver itself broke.
'use strict';

const path = require('path');

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on('data', (c) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

// json-bigint gives BigNumber objects for integers beyond 2^53; turn them
// into numbers when exact, strings otherwise, before printing.
function plain(value) {
  if (Array.isArray(value)) {
    return value.map(plain);
  }
  if (value && typeof value === 'object') {
    if (value._isBigNumber === true || (value.constructor && value.constructor.name === 'BigNumber')) {
      const n = Number(value.toString());
      return Number.isSafeInteger(n) ? n : value.toString();
    }
    const out = {};
    for (const k of Object.keys(value)) {
      out[k] = plain(value[k]);
    }
    return out;
  }
  return value;
}

function toJson(value) {
  return JSON.stringify(plain(value));
}

async function main() {
  const req = JSON.parse(await readStdin());
  for (const field of ['endpoint', 'accessKeyId', 'accessKeySecret', 'action', 'params']) {
    if (req[field] === undefined) {
      throw new Error(`request field "${field}" is missing`);
    }
  }

  if (req.nonce) {
    // The very kitx module instance pop-core itself loaded.
    const popDir = path.dirname(require.resolve('@alicloud/pop-core/package.json'));
    const kitx = require(require.resolve('kitx', { paths: [popDir] }));
    if (typeof kitx.makeNonce !== 'function') {
      throw new Error('kitx.makeNonce not found: pop-core internals changed');
    }
    kitx.makeNonce = () => req.nonce;
  }

  const RPCClient = require('@alicloud/pop-core').RPCClient;
  const config = {
    accessKeyId: req.accessKeyId,
    accessKeySecret: req.accessKeySecret,
    endpoint: req.endpoint,
    apiVersion: '2017-06-26',
  };
  if (req.https) {
    config.opts = { rejectUnauthorized: false };
  }
  // verbose: resolve to [body, entry] so the HTTP status of a success is
  // visible too (pop-core treats a 4xx body without Code as success).
  const client = new RPCClient(config, true);

  const params = Object.assign({}, req.params);
  if (req.timestamp) {
    params.Timestamp = req.timestamp;
  }
  const opts = { method: req.method || 'GET', timeout: 20000 };

  let out;
  try {
    const [body, entry] = await client.request(req.action, params, opts);
    out = { ok: true, status: entry.response.statusCode, body: body };
  } catch (err) {
    if (!err.entry) {
      // Not an API error reply (connection refused, TLS, JSON syntax, ...).
      out = {
        ok: false, transport: true, status: null, code: err.code || null,
        name: err.name, message: String(err.message), data: null,
      };
    } else {
      out = {
        ok: false,
        transport: false,
        status: err.entry && err.entry.response ? err.entry.response.statusCode : null,
        code: err.code || null,
        name: err.name,
        message: String(err.message),
        data: err.data || null,
      };
    }
  }
  process.stdout.write(toJson(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`popcore_test.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(2);
});
