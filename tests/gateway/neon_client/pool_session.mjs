// Neon's Pool in its WebSocket mode, unmodified: concurrent queries, a transaction on one
// checked-out session, an answer of many TLS records when Postgres is reached over TLS.
// Usage: node pool_session.mjs <config JSON>; prints one JSON document.
//   config: {host, port, connectionString}
import { Pool, neonConfig } from '@neondatabase/serverless';

const config = JSON.parse(process.argv[2]);
neonConfig.wsProxy = () => `${config.host}:${config.port}/v2`;
neonConfig.useSecureWebSocket = false;

const out = {};
const pool = new Pool({ connectionString: config.connectionString, max: 2 });
out.ssl = (await pool.query(
  'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0];
out.concurrent = await Promise.all([1, 2, 3, 4, 5].map(async (n) =>
  (await pool.query('SELECT $1::int * 10 AS n', [n])).rows[0].n));
const client = await pool.connect();
try {
  await client.query('BEGIN');
  await client.query('CREATE TEMP TABLE pool_check (n int)');
  await client.query('INSERT INTO pool_check SELECT generate_series(1, 5000)');
  out.inTransaction = (await client.query(
    'SELECT count(*)::int AS count, sum(n)::int AS total FROM pool_check')).rows[0];
  await client.query('ROLLBACK');
  out.bigAnswer = (await client.query("SELECT repeat('x', 1000000) AS x")).rows[0].x.length;
  try {
    await client.query('SELECT 1 / 0');
  } catch (error) {
    out.failure = error.code ?? null;
  }
  out.afterFailure = (await client.query('SELECT 2 AS two')).rows;
} finally {
  client.release();
}
await pool.end();
console.log(JSON.stringify(out));
