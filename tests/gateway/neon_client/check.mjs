// Drives the gateway with Neon's own HTTP driver, unmodified: the client nobody here wrote.
// Usage: node check.mjs <gateway base URL> <connection string>; prints one JSON document.
import { neon, neonConfig, NeonDbError } from '@neondatabase/serverless';

const [gatewayUrl, connectionString] = process.argv.slice(2);
neonConfig.fetchEndpoint = () => `${gatewayUrl}/sql`;
const sql = neon(connectionString);

const describeError = (error) => ({
  isNeonDbError: error instanceof NeonDbError,
  code: error.code ?? null,
  constraint: error.constraint ?? null,
  message: error.message,
});

const out = {};
out.plain = await sql`SELECT 1 AS one, 'text' AS word, NULL::int AS nothing`;
out.parameterised = await sql.query('SELECT $1::int + 1 AS n, $2::text AS s, $3::int8 AS big',
  [41, "it's", '9007199254740993']);
const quote = "O'Reilly";
out.tagged = await sql`SELECT ${quote}::text AS name, ${[1, 2, 3]}::int[] AS list`;
out.full = await sql.query('SELECT g FROM generate_series(1, 3) g', [], { fullResults: true });
out.full = { command: out.full.command, rowCount: out.full.rowCount,
  fields: out.full.fields.map((f) => [f.name, f.dataTypeID]), rows: out.full.rows };

await sql`DROP TABLE IF EXISTS neon_driver_check`;
await sql`CREATE TABLE neon_driver_check (id int PRIMARY KEY, note text)`;
out.transaction = await sql.transaction([
  sql`INSERT INTO neon_driver_check VALUES (1, 'first') RETURNING id`,
  sql`INSERT INTO neon_driver_check VALUES (2, 'second') RETURNING id`,
  sql`SELECT count(*)::int AS n FROM neon_driver_check`,
], { isolationLevel: 'Serializable', readOnly: false });

try {
  await sql`SELECT 1 / 0`;
  out.failure = null;
} catch (error) {
  out.failure = describeError(error);
}

try {
  await sql.transaction([
    sql`INSERT INTO neon_driver_check VALUES (3, 'third')`,
    sql`INSERT INTO neon_driver_check VALUES (1, 'duplicate')`,
  ]);
  out.failedTransaction = null;
} catch (error) {
  out.failedTransaction = describeError(error);
}
out.afterFailedTransaction = await sql`SELECT id FROM neon_driver_check ORDER BY id`;

try {
  await neon(connectionString.replace(/:[^:@/]*@/, ':wrong-password@'))`SELECT 1`;
  out.badPassword = null;
} catch (error) {
  out.badPassword = describeError(error);
}

console.log(JSON.stringify(out));
