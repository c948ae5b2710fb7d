// withAccelerate()'s cache, as an app uses it: `cacheStrategy` on reads and what
// `.withAccelerateInfo()` reports; a write through the client seen by the next cached
// read without any invalidate; rows changed behind the client's back (over a direct
// connection, by the test, at each pause) staying cached until `$accelerate.invalidate`
// or `invalidateAll` drops them. The table accel_author exists, empty.
// Usage: node cache.mjs <config JSON>; prints pause lines, then one JSON document.
import { attempt, pause, prisma, print } from './client.mjs';

const out = {};

/** A cached read of one author's name, with what Accelerate says about it. */
async function cachedName(email, cacheStrategy) {
  const { data, info } = await prisma.author
    .findUnique({ where: { email }, select: { name: true }, cacheStrategy })
    .withAccelerateInfo();
  return {
    name: data?.name ?? null,
    cacheStatus: info?.cacheStatus ?? null,
    lastModifiedIsADate: Number.isFinite(info?.lastModified?.getTime()),
  };
}

await prisma.author.createMany({
  data: ['ttl', 'swr', 'stale', 'write', 'nested', 'batch', 'tagged', 'all', 'other'].map(
    (name) => ({ email: `${name}@cache.example`, name }),
  ),
});

// ttl: the first read misses, the second is served from the cache
const ttl = { ttl: 60 };
out.ttl = [await cachedName('ttl@cache.example', ttl), await cachedName('ttl@cache.example', ttl)];

// swr alone: stale at once, served while it is revalidated
const swr = { swr: 60 };
out.swr = [await cachedName('swr@cache.example', swr), await cachedName('swr@cache.example', swr)];

// ttl then swr: fresh for a second, then served stale
const staleAfter = { ttl: 1, swr: 60 };
out.staleAfterTtl = [await cachedName('stale@cache.example', staleAfter)];
await new Promise((resolve) => setTimeout(resolve, 1500));
out.staleAfterTtl.push(await cachedName('stale@cache.example', staleAfter));

// no cacheStrategy: never cached
out.uncached = await cachedName('ttl@cache.example', undefined);

// read-after-write with no invalidate: an update, a nested write, a batch transaction
out.writeThenRead = [await cachedName('write@cache.example', ttl)];
await prisma.author.update({ where: { email: 'write@cache.example' }, data: { name: 'written' } });
out.writeThenRead.push(await cachedName('write@cache.example', ttl));

const postCount = async () => {
  const { data, info } = await prisma.post
    .count({ where: { author: { email: 'nested@cache.example' } }, cacheStrategy: ttl })
    .withAccelerateInfo();
  return { count: data, cacheStatus: info?.cacheStatus ?? null };
};
out.nestedWriteThenRead = [await postCount()];
await prisma.author.update({
  where: { email: 'nested@cache.example' },
  data: { posts: { create: [{ title: 'one' }, { title: 'two' }] } },
});
out.nestedWriteThenRead.push(await postCount());

out.transactionThenRead = [await cachedName('batch@cache.example', ttl)];
await prisma.$transaction([
  prisma.author.update({ where: { email: 'batch@cache.example' }, data: { name: 'in a batch' } }),
  prisma.author.count(),
]);
out.transactionThenRead.push(await cachedName('batch@cache.example', ttl));
await prisma.$transaction(async (tx) => {
  await tx.author.update({ where: { email: 'batch@cache.example' }, data: { name: 'interactive' } });
});
out.transactionThenRead.push(await cachedName('batch@cache.example', ttl));

// tags: a row changed behind the client stays cached until its tag is invalidated
const tagged = { ttl: 60, tags: ['authors_tagged'] };
const other = { ttl: 60, tags: ['authors_other'] };
out.tagged = [
  await cachedName('tagged@cache.example', tagged),
  await cachedName('other@cache.example', other),
];
await pause('rename tagged and other behind the client');
out.tagged.push(await cachedName('tagged@cache.example', tagged));
out.invalidate = await attempt(() => prisma.$accelerate.invalidate({ tags: ['authors_tagged'] }));
out.tagged.push(await cachedName('tagged@cache.example', tagged));
out.tagged.push(await cachedName('other@cache.example', other)); // another tag: still cached

// invalidateAll: everything cached goes
out.all = [await cachedName('all@cache.example', ttl)];
await pause('rename all behind the client');
out.all.push(await cachedName('all@cache.example', ttl));
out.invalidateAll = await attempt(() => prisma.$accelerate.invalidateAll());
out.all.push(await cachedName('all@cache.example', ttl));
out.all.push(await cachedName('other@cache.example', other));

print(out);
