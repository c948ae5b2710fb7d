// The Accelerate face's interpreter: Prisma's own query-plan interpreter and transaction
// manager (@prisma/client-engine-runtime), on Prisma's own Neon adapter (@prisma/adapter-neon,
// Neon's Pool in WebSocket mode), whose sessions reach poolgate's pool through the workers'
// private WebSocket sockets. So Prisma's parameter mapping, type conversion and error
// mapping are Prisma's, and every connection is one of poolgate's pooled ones.
//
// Started and supervised by `poolgate serve` (see companion_process.py); it serves only a
// unix socket in the supervisor's private directory, and only the gateway's workers talk
// to it: they have checked the API key, the client version, the body's size and shape,
// and they send the tenant's connection string (from --accelerate-keys-file) with each
// call. It exits when its standard input closes (the supervisor is gone, however it died).
//
// One call: POST / with headers
//   poolgate-op: info | query | start | commit | rollback
//   poolgate-database: postgresql://USER:PASSWORD@gateway/DATABASE
//   poolgate-transaction: <id> (query in a transaction, commit, rollback)
//   poolgate-writes: "schema"."table",... (a query in a transaction: the tables it writes)
//   poolgate-timeout-ms: how long the query may take before P6004
// and the client's JSON body; the answer is Accelerate's own (status, {data} or
// {code, error, meta}); a commit's answer names the tables the transaction wrote in
// `poolgate-written`, so their cached reads are dropped before the client hears of it.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';

const env = process.env;
const listenPath = env.POOLGATE_COMPANION_SOCKET;
const upstreams = (env.POOLGATE_COMPANION_UPSTREAMS ?? '').split(',').filter(Boolean);
const modules = env.POOLGATE_NODE_MODULES;
const maxSessions = Number(env.POOLGATE_COMPANION_SESSIONS ?? '4');
const maxTransactionMs = Number(env.POOLGATE_TRANSACTION_TIMEOUT_MAX_MS ?? '15000');
const maxWaitMs = Number(env.POOLGATE_ACQUIRE_TIMEOUT_MS ?? '5000');
if (!listenPath || upstreams.length === 0 || !modules) {
  console.error('companion: POOLGATE_COMPANION_SOCKET, _UPSTREAMS and POOLGATE_NODE_MODULES are required');
  process.exit(2);
}

// the packages come from the node_modules folder poolgate was told of (--accelerate-node-modules)
const require = createRequire(path.join(path.dirname(path.resolve(modules)), 'poolgate-companion.cjs'));
const neon = require('@neondatabase/serverless');
const { PrismaNeon } = require('@prisma/adapter-neon');
const runtime = require('@prisma/client-engine-runtime');
const WebSocket = require('ws');

// Neon's Pool opens ws://<host>/v2; every session goes to one worker's private socket
// instead (spread over the workers), where no API key is asked: the socket's directory
// is the supervisor's, mode 0700.
let next = 0;
class WorkerSocket extends WebSocket {
  constructor(url, protocols) {
    const socket = upstreams[next++ % upstreams.length];
    super(`ws+unix:${socket}:${new URL(url).pathname}`, protocols);
  }
}
neon.neonConfig.webSocketConstructor = WorkerSocket;
neon.neonConfig.useSecureWebSocket = false;
neon.neonConfig.wsProxy = (host) => `${host}/v2`;

const interpreter = runtime.QueryInterpreter.forSql({ tracingHelper: runtime.noopTracingHelper });
const tenants = new Map(); // connection string -> Promise<{adapter, manager}>
const written = new Map(); // transaction id -> {tables: Set, since: ms} its queries wrote

// a transaction that expired (or whose client went away) is never committed or rolled
// back through here: what it wrote is forgotten once it cannot be open any more
function forgetExpired(now) {
  for (const [id, entry] of written) {
    if (now - entry.since > 2 * maxTransactionMs + 60_000) written.delete(id);
  }
}

function tenant(connectionString) {
  let found = tenants.get(connectionString);
  if (found === undefined) {
    found = (async () => {
      const factory = new PrismaNeon({
        connectionString,
        max: maxSessions,
        idleTimeoutMillis: 10_000, // an idle session holds a pooled connection: let it go
        connectionTimeoutMillis: maxWaitMs,
      });
      const adapter = await factory.connect();
      const manager = new runtime.TransactionManager({
        driverAdapter: adapter,
        transactionOptions: { timeout: maxTransactionMs, maxWait: maxWaitMs },
        tracingHelper: runtime.noopTracingHelper,
      });
      return { adapter, manager };
    })();
    found.catch(() => tenants.delete(connectionString));
    tenants.set(connectionString, found);
  }
  return found;
}

class Answer {
  constructor(status, body, headers = {}) {
    Object.assign(this, { status, body, headers });
  }
}

class QueryTimeout extends Error {}

async function perform(op, headers, body) {
  const database = headers['poolgate-database'];
  const { adapter, manager } = await tenant(database);
  const txId = headers['poolgate-transaction'];
  switch (op) {
    case 'info':
      return new Answer(200, {
        provider: adapter.provider,
        connectionInfo: adapter.getConnectionInfo?.() ?? { supportsRelationJoins: false },
      });
    case 'query': {
      const request = JSON.parse(body);
      const queryable = txId ? await manager.getTransaction({ id: txId }, 'query') : adapter;
      const comments = request.comments;
      const sqlCommenter =
        comments && Object.keys(comments).length > 0
          ? { plugins: [() => comments], queryInfo: { type: 'single', action: 'queryRaw', query: {} } }
          : undefined;
      const timeout = Number(headers['poolgate-timeout-ms'] ?? maxTransactionMs);
      const stop = new AbortController();
      try {
        const result = await Promise.race([
          interpreter.run(request.plan, {
            queryable,
            transactionManager: txId ? { enabled: false } : { enabled: true, manager },
            scope: request.params,
            sqlCommenter,
          }),
          sleep(timeout, undefined, { ref: false, signal: stop.signal }).then(() => {
            throw new QueryTimeout();
          }),
        ]);
        if (txId && headers['poolgate-writes']) {
          const entry = written.get(txId) ?? { tables: new Set(), since: Date.now() };
          for (const table of headers['poolgate-writes'].split(',')) entry.tables.add(table);
          written.set(txId, entry);
        }
        return new Answer(200, { data: runtime.normalizeJsonProtocolValues(result) });
      } finally {
        stop.abort();
      }
    }
    case 'start': {
      forgetExpired(Date.now());
      const options = body.length ? JSON.parse(body) : {};
      const timeout = Math.min(options.timeout ?? maxTransactionMs, maxTransactionMs);
      const maxWait = Math.min(options.maxWait ?? maxWaitMs, maxTransactionMs);
      const started = await manager.startTransaction({ ...options, timeout, maxWait });
      return new Answer(200, started, { 'prisma-transaction-id': started.id });
    }
    case 'commit':
    case 'rollback': {
      const tables = written.get(txId)?.tables;
      written.delete(txId);
      if (op === 'commit') {
        await manager.commitTransaction(txId);
      } else {
        await manager.rollbackTransaction(txId);
      }
      const headersOut = op === 'commit' && tables ? { 'poolgate-written': [...tables].join(',') } : {};
      return new Answer(200, {}, headersOut);
    }
    default:
      return new Answer(400, { code: 'P6005', error: `unknown operation ${JSON.stringify(op)}` });
  }
}

// Connection strings carry passwords: no error message leaves with one in it.
function redact(text, headers) {
  let out = String(text);
  const database = headers['poolgate-database'];
  if (database) {
    out = out.replaceAll(database, '[REDACTED]');
    try {
      const password = decodeURIComponent(new URL(database).password);
      if (password) out = out.replaceAll(password, '[REDACTED]');
    } catch {}
  }
  return out.replaceAll(/postgres(ql)?:\/\/\S+/gi, '[REDACTED]');
}

function meta(value) {
  try {
    return JSON.parse(JSON.stringify(value ?? {}));
  } catch {
    return {};
  }
}

// The one place a failure becomes an answer, as Prisma's own server (query-plan-executor)
// answers it: transaction errors 409, errors the client shows its user 400 (P2002 ...).
function failure(error, headers) {
  const said = (message) => redact(message, headers);
  if (error instanceof QueryTimeout) {
    return new Answer(504, { code: 'P6004', error: 'the query did not finish within its time limit' });
  }
  if (error instanceof runtime.TransactionManagerError) {
    return new Answer(409, { code: error.code, error: said(error.message), meta: meta(error.meta) });
  }
  if (error instanceof runtime.UserFacingError) {
    return new Answer(400, { code: error.code, error: said(error.message), meta: JSON.parse(said(JSON.stringify(meta(error.meta)))) });
  }
  if (error instanceof SyntaxError) {
    return new Answer(400, { code: 'P6005', error: `the request body is not valid JSON: ${error.message}` });
  }
  if (error?.name === 'DriverAdapterError') {
    // not a database error the client can act on (that would be a UserFacingError): the
    // connection through the gateway failed
    const cause = error.cause ?? {};
    return new Answer(503, {
      code: 'P6008',
      error: said(`the database could not be reached through the pool: ${cause.message ?? cause.kind ?? error.message}`),
    }, { 'retry-after': '1' });
  }
  if (isConnectionFailure(error)) {
    return new Answer(503, {
      code: 'P6008',
      error: said(`no connection to the database in time: ${error.message}`),
    }, { 'retry-after': '1' });
  }
  if (isCutOff(error)) {
    // the session to the pool broke during the call: a write in it may have committed
    return new Answer(504, {
      code: 'P6004',
      error: said(`the connection to the database broke during the call, whether it took effect is unknown: ${error.message}`),
    });
  }

  // what is left comes from a plan the interpreter could not follow (a node type it does
  // not know, a parameter of the wrong type): the client's request, not the server
  return new Answer(400, { code: 'P6005', error: said(`the query plan could not be run: ${error?.message ?? error}`) });
}

// Neon's Pool (pg-pool) and its WebSocket: no session had (a full pool, a worker's socket
// gone: nothing was sent), or a session cut while it was in use (something may have run)
const CONNECT_MESSAGES = /timeout exceeded when trying to connect|due to connection timeout|WebSocket/i;
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'ETIMEDOUT']);
const CUT_MESSAGES = /Connection terminated/i;
const CUT_CODES = new Set(['ECONNRESET', 'EPIPE']);
function isConnectionFailure(error) {
  return CONNECT_CODES.has(error?.code) || CONNECT_MESSAGES.test(String(error?.message ?? ''));
}
function isCutOff(error) {
  return CUT_CODES.has(error?.code) || CUT_MESSAGES.test(String(error?.message ?? ''));
}

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', async () => {
    const headers = request.headers;
    let answer;
    try {
      answer = await perform(headers['poolgate-op'], headers, Buffer.concat(chunks).toString('utf8'));
    } catch (error) {
      answer = failure(error, headers);
    }
    let payload;
    try {
      payload = JSON.stringify(answer.body);
    } catch (error) {
      answer = failure(error, headers);
      payload = JSON.stringify(answer.body);
    }
    response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
    response.end(payload);
  });
});
server.keepAliveTimeout = 60_000;

async function stop() {
  server.close();
  for (const found of tenants.values()) {
    try {
      const { adapter, manager } = await found;
      await manager.cancelAllTransactions();
      await adapter.dispose();
    } catch {}
  }
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

fs.rmSync(listenPath, { force: true });
server.listen(listenPath, () => {
  fs.chmodSync(listenPath, 0o600);
  // the workers' line, "listening", with this process's name (tests count them)
  console.error(`{"event": "listening", "companion": ${JSON.stringify(listenPath)}}`);
});
