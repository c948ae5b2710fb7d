// Kysely aborting a running query with `inflightQueryAbortStrategy: 'cancel query'`: its
// PostgresDialect cancels with `SELECT pg_cancel_backend(<processID>)` on another of the
// Pool's sessions, processID being the BackendKeyData's process id.
// Usage: node kysely_abort.mjs <config JSON>; prints one JSON line once the abort has
// been thrown (whether the server stopped the statement is for the caller to see), then
// exits when the statement has ended.
//   config: {host, port, connectionString, marker}
import { Pool, neonConfig } from '@neondatabase/serverless';
import { Kysely, PostgresDialect, sql } from 'kysely';

const config = JSON.parse(process.argv[2]);
neonConfig.wsProxy = () => `${config.host}:${config.port}/v2`;
neonConfig.useSecureWebSocket = false;

const db = new Kysely({
  dialect: new PostgresDialect({
    pool: new Pool({ connectionString: config.connectionString, max: 2 }),
  }),
});
const out = {};

// Both sessions opened and used first, as in an application that has run for a while: a
// session's processID is known once its BackendKeyData has arrived (on a session still
// logging in, with the password pipelined, it is not, and Kysely asks the server for
// pg_backend_pid() instead, which cancels the right backend).
await Promise.all([1, 2].map(() => sql`SELECT pg_sleep(0.05)`.execute(db)));

const controller = new AbortController();
const sleeping = sql`SELECT pg_sleep(60), ${sql.lit(config.marker)} AS marker`
  .execute(db, { signal: controller.signal, inflightQueryAbortStrategy: 'cancel query' });
const sleeper = async () => (await sql`
  SELECT pid FROM pg_stat_activity
  WHERE state = 'active' AND strpos(query, ${config.marker}) > 0 AND pid <> pg_backend_pid()`
  .execute(db)).rows[0]?.pid;
while ((out.serverPid = await sleeper()) === undefined) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
controller.abort(new Error('the user went away'));
try {
  await sleeping;
} catch (error) {
  out.aborted = error.message;
}
console.log(JSON.stringify(out));
await db.destroy(); // waits for the statement: Kysely releases its session once it ends
