"""Prisma Accelerate's protocol (Prisma 7 clients built with `accelerateUrl`, and
`withAccelerate()`): the client compiles each query into a plan, and this face runs it
on poolgate's pool with Prisma's own interpreter, in a companion Node process (see
`companion.mjs`), behind an API key of its own, with poolgate's cache in front."""
