// Kysely's PostgresDialect over Neon's Pool, through the gateway's WebSocket face,
// configured as the README shows. The table orm_kysely_order exists, empty.
// Usage: node kysely.mjs <config JSON>; prints one JSON document.
//   config: {host, port, connectionString}
import { Pool, neonConfig } from '@neondatabase/serverless';
import { Kysely, PostgresDialect, sql } from 'kysely';

const config = JSON.parse(process.argv[2]);
neonConfig.wsProxy = () => `${config.host}:${config.port}/v2`;
neonConfig.useSecureWebSocket = false;

const db = new Kysely({
  dialect: new PostgresDialect({ pool: new Pool({ connectionString: config.connectionString }) }),
});

const ids = async (from = db) =>
  (await from.selectFrom('orm_kysely_order').select('id').orderBy('id').execute())
    .map((row) => row.id);
const out = {};

await db.transaction().execute(async (trx) => {
  await trx.insertInto('orm_kysely_order').values([{ id: 1, item: 'tea' }, { id: 2, item: 'milk' }])
    .execute();
});
out.afterCommit = await ids();

try {
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('orm_kysely_order').values({ id: 3, item: 'sugar' }).execute();
    out.seenBeforeThrow = await ids(trx);
    throw new Error('undo the insert');
  });
} catch (error) {
  out.rolledBack = error.message;
}
out.afterRollback = await ids();

await db.transaction().setIsolationLevel('serializable').execute(async (trx) => {
  const { rows } = await sql`SHOW transaction_isolation`.execute(trx);
  out.isolation = rows[0].transaction_isolation;
  await trx.insertInto('orm_kysely_order').values({ id: 4, item: 'lemon' }).execute();
});
out.afterSerializable = await ids();

// A controlled transaction: a savepoint rolled back to, then a commit.
const trx = await db.startTransaction().execute();
await trx.insertInto('orm_kysely_order').values({ id: 5, item: 'honey' }).execute();
const beforeJam = await trx.savepoint('before_jam').execute();
await beforeJam.insertInto('orm_kysely_order').values({ id: 6, item: 'jam' }).execute();
out.seenInSavepoint = await ids(beforeJam);
await beforeJam.rollbackToSavepoint('before_jam').execute();
await trx.commit().execute();
out.afterSavepoint = await ids();

await db.destroy(); // ends the pool
console.log(JSON.stringify(out));
