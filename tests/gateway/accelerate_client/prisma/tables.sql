-- The tables of schema.prisma, as `prisma migrate dev` writes them for PostgreSQL
-- (offline, its schema engine cannot be downloaded, so the test runs this instead).

-- CreateEnum
CREATE TYPE "accel_role" AS ENUM ('READER', 'EDITOR', 'ADMIN');

-- CreateTable
CREATE TABLE "accel_author" (
    "id" SERIAL NOT NULL,
    "email" TEXT NOT NULL,
    "name" TEXT,
    "role" "accel_role" NOT NULL DEFAULT 'READER',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "accel_author_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "accel_post" (
    "id" SERIAL NOT NULL,
    "title" TEXT NOT NULL,
    "published" BOOLEAN NOT NULL DEFAULT false,
    "authorId" INTEGER NOT NULL,
    "tags" TEXT[],

    CONSTRAINT "accel_post_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "accel_sample" (
    "id" SERIAL NOT NULL,
    "label" TEXT NOT NULL,
    "big" BIGINT NOT NULL,
    "amount" DECIMAL(65,30) NOT NULL,
    "payload" BYTEA NOT NULL,
    "doc" JSONB NOT NULL,
    "at" TIMESTAMP(3) NOT NULL,
    "role" "accel_role" NOT NULL,

    CONSTRAINT "accel_sample_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "accel_author_email_key" ON "accel_author"("email");

-- CreateIndex
CREATE INDEX "accel_post_authorId_idx" ON "accel_post"("authorId");

-- CreateIndex
CREATE UNIQUE INDEX "accel_sample_label_key" ON "accel_sample"("label");

-- AddForeignKey
ALTER TABLE "accel_post" ADD CONSTRAINT "accel_post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "accel_author"("id") ON DELETE CASCADE ON UPDATE CASCADE;
