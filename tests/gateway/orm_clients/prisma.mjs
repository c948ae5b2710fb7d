// Prisma 7 with @prisma/adapter-neon's PrismaNeon (Neon's Pool, WebSocket mode) through the
// gateway's WebSocket face, configured as the README shows. The table orm_prisma_note
// (prisma/schema.prisma's Note) exists, empty.
// Usage: node prisma.mjs <config JSON>; prints one JSON document.
//   config: {host, port, connectionString, client}: `client` is the path of the
//   client.ts that `prisma generate` wrote (a user writes
//   `import { PrismaClient } from './generated/client.ts'`).
import { pathToFileURL } from 'node:url';
import { neonConfig } from '@neondatabase/serverless';
import { PrismaNeon } from '@prisma/adapter-neon';

const config = JSON.parse(process.argv[2]);
const { PrismaClient } = await import(pathToFileURL(config.client).href);
neonConfig.wsProxy = () => `${config.host}:${config.port}/v2`;
neonConfig.useSecureWebSocket = false;

const adapter = new PrismaNeon({ connectionString: config.connectionString });
const prisma = new PrismaClient({ adapter });

const bodies = async (from = prisma) =>
  (await from.note.findMany({ orderBy: { id: 'asc' } })).map((note) => note.body);
const out = {};

const created = await prisma.note.create({ data: { body: 'first' } });
out.found = await prisma.note.findUnique({ where: { id: created.id } });
out.notFound = await prisma.note.findUnique({ where: { id: created.id + 1000 } });

await prisma.$transaction(async (tx) => {
  const [{ transaction_isolation: isolation }] = await tx.$queryRaw`SHOW transaction_isolation`;
  out.isolation = isolation;
  await tx.note.create({ data: { body: 'committed' } });
  await tx.note.update({ where: { id: created.id }, data: { body: 'first, edited' } });
}, { isolationLevel: 'Serializable' });
out.afterCommit = await bodies();

try {
  await prisma.$transaction(async (tx) => {
    await tx.note.create({ data: { body: 'rolled back' } });
    await tx.note.deleteMany({ where: { body: 'committed' } });
    out.seenBeforeThrow = await bodies(tx);
    throw new Error('undo the transaction');
  }, { isolationLevel: 'Serializable' });
} catch (error) {
  out.rolledBack = error.message;
}
out.afterRollback = await bodies();

const describe = (error) => ({ code: error.code ?? null, name: error.name });
try {
  await prisma.note.create({ data: { id: created.id, body: 'the same id' } });
} catch (error) {
  out.duplicate = describe(error);
}

// The batch form: one transaction, kept whole or not at all.
await prisma.$transaction([
  prisma.note.create({ data: { body: 'batch one' } }),
  prisma.note.create({ data: { body: 'batch two' } }),
]);
try {
  await prisma.$transaction([
    prisma.note.create({ data: { body: 'batch three' } }),
    prisma.note.create({ data: { id: created.id, body: 'the same id again' } }),
  ]);
} catch (error) {
  out.batchRefused = describe(error);
}
out.afterBatches = await bodies();

await prisma.$disconnect(); // ends the adapter's pool
console.log(JSON.stringify(out));
