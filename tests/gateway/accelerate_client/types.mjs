// Every scalar type whose value Accelerate's protocol carries typed ({"$type": …}), written
// and read back through the client, at the edges where a lossy encoding would show:
// BigInt past 2^53, a Decimal of 50 digits, all 256 byte values, nested Json, a DateTime
// with milliseconds, an enum; as a parameter of a filter too. The table accel_sample
// exists, empty. Usage: node types.mjs <config JSON>; prints one JSON document.
import { isDeepStrictEqual } from 'node:util';
import { Prisma, prisma, print, Role } from './client.mjs';

const doc = {
  list: [1, -2.5, 'x', null, true, { deeper: { empty: [], nothing: {} } }],
  'ünï "quoted" \\ back': 'çødé\n',
  large: 9007199254740991,
};
const rows = [
  {
    label: 'max',
    big: 9223372036854775807n,
    amount: new Prisma.Decimal('12345678901234567890.123456789012345678901234567891'),
    payload: Uint8Array.from({ length: 256 }, (_, index) => index),
    doc,
    at: new Date('2026-11-17T12:34:56.789Z'),
    role: Role.ADMIN,
  },
  {
    label: 'min',
    big: -9223372036854775808n,
    amount: new Prisma.Decimal('-0.000000000000000000000000000001'),
    payload: new Uint8Array(),
    doc: [],
    at: new Date('1970-01-01T00:00:00.001Z'),
    role: Role.READER,
  },
];

const describeRow = (row) => ({
  label: row.label,
  big: { type: typeof row.big, value: row.big },
  amount: { isDecimal: Prisma.Decimal.isDecimal(row.amount), value: row.amount.toFixed() },
  payload: { isBytes: row.payload instanceof Uint8Array, value: row.payload },
  doc: row.doc,
  at: { isDate: row.at instanceof Date, value: row.at.toISOString() },
  role: row.role,
});

const out = {};
out.returned = [];
for (const row of rows) out.returned.push(describeRow(await prisma.sample.create({ data: row })));
const read = await prisma.sample.findMany({ orderBy: { label: 'asc' } });
out.read = read.map(describeRow);
out.docsEqual = rows.map((row) => isDeepStrictEqual(read.find((r) => r.label === row.label).doc, row.doc));
// each value as a filter's parameter: the row is found by its exact value
out.foundBy = {
  big: (await prisma.sample.findFirst({ where: { big: 9223372036854775807n } }))?.label ?? null,
  amount:
    (await prisma.sample.findFirst({ where: { amount: rows[1].amount } }))?.label ?? null,
  at: (await prisma.sample.findFirst({ where: { at: rows[0].at } }))?.label ?? null,
  payload: (await prisma.sample.findFirst({ where: { payload: rows[0].payload } }))?.label ?? null,
  role: (await prisma.sample.findFirst({ where: { role: Role.READER } }))?.label ?? null,
  doc: (await prisma.sample.findFirst({ where: { doc: { path: ['large'], equals: 9007199254740991 } } }))?.label ?? null,
};
out.aggregate = await prisma.sample.aggregate({ _sum: { big: true }, _max: { amount: true } });
out.aggregate._max.amount = out.aggregate._max.amount.toFixed();
print(out);
