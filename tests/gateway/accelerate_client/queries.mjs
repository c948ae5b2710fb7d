// The Prisma client with withAccelerate() doing what apps do, no cacheStrategy anywhere:
// CRUD, nested writes, relation joins, createMany, upsert, a unique violation, raw SQL,
// both kinds of transaction and one that outlives its timeout. The tables of
// prisma/tables.sql exist, empty. Usage: node queries.mjs <config JSON>; prints one JSON
// document.
import { attempt, describe, prisma, print, Role } from './client.mjs';

const out = {};
const emails = async (from = prisma) =>
  (await from.author.findMany({ orderBy: { id: 'asc' } })).map((author) => author.email);

// create / find / update / delete
const ada = await prisma.author.create({ data: { email: 'ada@example.com', name: 'Ada' } });
out.created = { email: ada.email, role: ada.role, createdAtIsDate: ada.createdAt instanceof Date };
out.found = await prisma.author.findUnique({
  where: { email: 'ada@example.com' },
  select: { id: true, name: true },
});
out.notFound = await prisma.author.findUnique({ where: { email: 'nobody@example.com' } });
out.updated = await prisma.author.update({
  where: { id: ada.id },
  data: { name: 'Ada Lovelace', role: Role.EDITOR },
  select: { name: true, role: true },
});
const brief = await prisma.author.create({ data: { email: 'brief@example.com' } });
out.deleted = (await prisma.author.delete({ where: { id: brief.id } })).email;
out.afterDelete = await emails();

// a nested write (the author and two posts in one call) read back through a relation
const grace = await prisma.author.create({
  data: {
    email: 'grace@example.com',
    name: 'Grace',
    posts: {
      create: [
        { title: 'COBOL', published: true, tags: ['lang', 'history'] },
        { title: 'Nanoseconds', tags: [] },
      ],
    },
  },
  include: { posts: { orderBy: { title: 'asc' } } },
});
out.nestedCreate = grace.posts.map((post) => ({ title: post.title, tags: post.tags }));
await prisma.author.update({
  where: { id: grace.id },
  data: {
    posts: {
      updateMany: { where: { published: false }, data: { published: true } },
      create: { title: 'Debugging' },
    },
  },
});
const withPosts = await prisma.author.findUnique({
  where: { id: grace.id },
  include: { posts: { orderBy: { title: 'asc' }, select: { title: true, published: true } } },
});
out.included = withPosts.posts;
out.postsWithAuthor = (
  await prisma.post.findMany({
    where: { published: true },
    orderBy: { title: 'asc' },
    include: { author: { select: { email: true } } },
  })
).map((post) => [post.title, post.author.email]);
out.relationFilter = (
  await prisma.author.findMany({
    where: { posts: { some: { tags: { has: 'history' } } } },
    select: { email: true, _count: { select: { posts: true } } },
  })
).map((author) => [author.email, author._count.posts]);

// createMany, with and without a duplicate skipped
out.createMany = await prisma.author.createMany({
  data: [{ email: 'm1@example.com' }, { email: 'm2@example.com' }, { email: 'm3@example.com' }],
});
out.createManySkip = await prisma.author.createMany({
  data: [{ email: 'm1@example.com' }, { email: 'm4@example.com' }],
  skipDuplicates: true,
});

// upsert: one that creates, one that updates
const upsert = (name) =>
  prisma.author.upsert({
    where: { email: 'up@example.com' },
    create: { email: 'up@example.com', name },
    update: { name },
    select: { name: true },
  });
out.upsertCreated = await upsert('first');
out.upsertUpdated = await upsert('second');

// a unique violation
out.duplicate = (await attempt(() => prisma.author.create({ data: { email: 'ada@example.com' } })))
  .error;

// raw SQL, with a parameter
out.queryRaw = await prisma.$queryRaw`
  SELECT count(*) AS authors, ${'ünïcode'}::text AS echoed, ${41}::int + 1 AS answer
  FROM accel_author`;
out.queryRawTypes = Object.values(out.queryRaw[0]).map((value) => typeof value);
out.executeRaw = await prisma.$executeRaw`
  UPDATE accel_author SET name = 'raw' WHERE email LIKE ${'m%@example.com'}`;

// the batch form: one transaction, kept whole or not at all
out.batch = (
  await prisma.$transaction([
    prisma.author.create({ data: { email: 'batch1@example.com' }, select: { email: true } }),
    prisma.author.count(),
  ])
).map((item) => (typeof item === 'object' ? item.email : item));
out.batchRefused = (
  await attempt(() =>
    prisma.$transaction([
      prisma.author.create({ data: { email: 'batch2@example.com' } }),
      prisma.author.create({ data: { email: 'ada@example.com' } }),
    ]),
  )
).error;

// an interactive transaction at SERIALIZABLE that commits, and one whose body throws
out.interactive = await prisma.$transaction(
  async (tx) => {
    const [{ transaction_isolation: isolation }] = await tx.$queryRaw`SHOW transaction_isolation`;
    await tx.author.create({ data: { email: 'tx@example.com' } });
    const inside = (await emails(tx)).includes('tx@example.com');
    return { isolation, inside };
  },
  { isolationLevel: 'Serializable' },
);
out.thrown = (
  await attempt(() =>
    prisma.$transaction(async (tx) => {
      await tx.author.create({ data: { email: 'thrown@example.com' } });
      throw new Error('undo the transaction');
    }),
  )
).error;

// an interactive transaction whose body takes longer than its timeout
out.timedOut = (
  await attempt(() =>
    prisma.$transaction(
      async (tx) => {
        await tx.author.create({ data: { email: 'late@example.com' } });
        await tx.$queryRaw`SELECT pg_sleep(3)::text AS slept`;
        await tx.author.create({ data: { email: 'later@example.com' } });
      },
      { timeout: 1000 },
    ),
  )
).error;

out.finalEmails = await emails();
print(out);
