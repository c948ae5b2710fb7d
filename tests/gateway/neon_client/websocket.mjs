// Drives the gateway's WebSocket face with Neon's own driver in its WebSocket mode
// (Pool and Client), unmodified, configured as the README shows.
// Usage: node websocket.mjs <config JSON>; prints one JSON document.
//   config: {host, port, secure, connectionString, wrongConnectionString, apiKey?, ca?}
import { Client, Pool, neonConfig } from '@neondatabase/serverless';

const config = JSON.parse(process.argv[2]);
const key = config.apiKey ? `?api_key=${encodeURIComponent(config.apiKey)}` : '';
neonConfig.wsProxy = () => `${config.host}:${config.port}/v2${key}`;
neonConfig.useSecureWebSocket = config.secure;
// Node 22+ has a global WebSocket (undici): the driver's default constructor

const describe = (error) => ({ code: error.code ?? null, message: error.message });
const out = {};

async function withClient(options, body) {
  const client = new Client({ connectionString: config.connectionString, ...options });
  await client.connect();
  try {
    return await body(client);
  } finally {
    await client.end();
  }
}

for (const pipeline of ['password', false]) {
  neonConfig.pipelineConnect = pipeline;
  out[`pipeline_${pipeline}`] = await withClient({}, async (client) => {
    const plain = await client.query("SELECT 1 AS one, 'text' AS word");
    return plain.rows;
  });
}
neonConfig.pipelineConnect = 'password';

out.client = await withClient({}, async (client) => {
  const result = {};
  result.parameters = (await client.query('SELECT $1::int + 1 AS n, $2::text AS s', [41, "it's"]))
    .rows;
  const named = { name: 'next-number', text: 'SELECT $1::int + 1 AS n' };
  result.prepared = [];
  for (const value of [1, 2, 3]) {
    result.prepared.push((await client.query({ ...named, values: [value] })).rows[0].n);
  }
  result.preparedOnServer = (await client.query(
    "SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name = 'next-number'")).rows[0].n;
  await client.query('DROP TABLE IF EXISTS ws_check');
  await client.query('CREATE TABLE ws_check (id int PRIMARY KEY)');
  await client.query('BEGIN');
  await client.query('INSERT INTO ws_check VALUES (1), (2)');
  await client.query('COMMIT');
  await client.query('BEGIN');
  await client.query('INSERT INTO ws_check VALUES (3)');
  await client.query('ROLLBACK');
  result.afterCommitAndRollback = (await client.query('SELECT id FROM ws_check ORDER BY id'))
    .rows.map((row) => row.id);
  await client.query('BEGIN');
  try {
    await client.query('SELECT 1 / 0');
  } catch (error) {
    result.inTransaction = describe(error);
  }
  try {
    await client.query('SELECT 1');
  } catch (error) {
    result.afterError = describe(error);
  }
  await client.query('ROLLBACK');
  result.afterRollback = (await client.query('SELECT 2 AS two')).rows;
  return result;
});

const pool = new Pool({ connectionString: config.connectionString, max: 3 });
out.pool = await Promise.all([1, 2, 3, 4, 5].map(async (n) =>
  (await pool.query('SELECT $1::int * 10 AS n', [n])).rows[0].n));
const checkedOut = await pool.connect();
try {
  await checkedOut.query('BEGIN');
  await checkedOut.query('INSERT INTO ws_check VALUES (10)');
  await checkedOut.query('COMMIT');
} finally {
  checkedOut.release();
}
out.poolCommitted = (await pool.query('SELECT count(*)::int AS n FROM ws_check WHERE id = 10'))
  .rows[0].n;
await pool.end();

// With the password pipelined, connect() resolves before the server has checked it: the
// refusal arrives as the client's 'error' event and fails its first query.
for (const pipeline of ['password', false]) {
  neonConfig.pipelineConnect = pipeline;
  const client = new Client({ connectionString: config.wrongConnectionString });
  const events = [];
  client.on('error', (error) => events.push(describe(error)));
  let failure = null;
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (error) {
    failure = describe(error);
  }
  out[`wrongPassword_${pipeline}`] = { failure, events };
  await client.end().catch(() => null);
}
console.log(JSON.stringify(out));
