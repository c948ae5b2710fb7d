// Drizzle (drizzle-orm/neon-serverless) over Neon's Pool, through the gateway's WebSocket
// face, configured as the README shows. The table orm_drizzle_account exists, empty.
// Usage: node drizzle.mjs <config JSON>; prints one JSON document.
//   config: {host, port, connectionString}
import { Pool, neonConfig } from '@neondatabase/serverless';
import { asc, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/neon-serverless';
import { integer, pgTable, text } from 'drizzle-orm/pg-core';

const config = JSON.parse(process.argv[2]);
neonConfig.wsProxy = () => `${config.host}:${config.port}/v2`;
neonConfig.useSecureWebSocket = false;

const pool = new Pool({ connectionString: config.connectionString });
const db = drizzle({ client: pool });

const accounts = pgTable('orm_drizzle_account', {
  id: integer('id').primaryKey(),
  owner: text('owner').notNull(),
});

const ids = async (from = db) =>
  (await from.select({ id: accounts.id }).from(accounts).orderBy(asc(accounts.id)))
    .map((row) => row.id);
const out = {};

// Whatever the body throws rolls the transaction back and is thrown again by transaction().
async function failing(body) {
  try {
    await body();
    return null;
  } catch (error) {
    return error.message;
  }
}

await db.transaction(async (tx) => {
  await tx.insert(accounts).values([{ id: 1, owner: 'ada' }, { id: 2, owner: 'brian' }]);
});
out.afterCommit = await ids();

out.rolledBack = await failing(() => db.transaction(async (tx) => {
  await tx.insert(accounts).values({ id: 3, owner: 'carol' });
  out.seenBeforeThrow = await ids(tx);
  throw new Error('undo the insert');
}));
out.afterRollback = await ids();

await db.transaction(async (tx) => {
  await tx.insert(accounts).values({ id: 4, owner: 'dennis' });
  out.innerRolledBack = await failing(() => tx.transaction(async (savepoint) => {
    await savepoint.insert(accounts).values({ id: 5, owner: 'edsger' });
    out.seenInSavepoint = await ids(savepoint);
    throw new Error('undo to the savepoint');
  }));
  await tx.insert(accounts).values({ id: 6, owner: 'frances' });
});
out.afterSavepoint = await ids();

// A statement Postgres refuses inside the transaction: Drizzle rolls back, the session
// (the Pool's connection) carries on.
out.refused = await failing(() => db.transaction(async (tx) => {
  await tx.insert(accounts).values({ id: 7, owner: 'grace' });
  try {
    await tx.insert(accounts).values({ id: 1, owner: 'a second ada' });
  } catch (error) {
    out.refusedCode = error.cause?.code ?? null;
    throw error;
  }
}));
out.afterRefused = await ids();
await pool.end();

// More queries at once than the Pool has sessions. Each session holds a gateway
// connection for as long as the Pool keeps it, idle or not, so `max` is at most the
// gateway's pool (a worker's share of --pool-size): the extra queries wait in the Pool,
// not in the gateway (where the default max of 10 would wait --acquire-timeout for a
// connection that idle sessions hold, then fail with 53300).
const sized = new Pool({ connectionString: config.connectionString, max: 4 });
const concurrent = drizzle({ client: sized });
out.concurrent = await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map(async (n) =>
  (await concurrent.execute(sql`SELECT ${n}::int * 10 AS n`)).rows[0].n));
out.concurrentSessions = sized.totalCount;
await sized.end();
console.log(JSON.stringify(out));
