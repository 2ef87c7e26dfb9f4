-- The SQLite store's schema (version 10) as sqlite_master holds it, written by the
-- store of version 0.1 (tables of versions 1, 2 and 4 made by sqlite-utils). A store
-- created now must hold the same text: see test_persistence.py.

-- index inbox_by_workflow
CREATE INDEX inbox_by_workflow ON inbox (workflow_id);
-- index inbox_msg_id
CREATE UNIQUE INDEX "inbox_msg_id"
    ON "inbox" ("msg_id");
-- index inbox_pending
CREATE INDEX inbox_pending ON inbox (workflow_id, id) WHERE consumed_seq IS NULL;
-- index monitors_by_watcher
CREATE INDEX "monitors_by_watcher"
    ON "monitors" ("watcher");
-- index queue_dedup
CREATE UNIQUE INDEX queue_dedup ON queue (dedup) WHERE dedup IS NOT NULL;
-- index timers_by_deadline
CREATE INDEX "timers_by_deadline"
    ON "timers" ("deadline");
-- index workflows_by_admitted
CREATE INDEX workflows_by_admitted ON workflows (host, admitted) WHERE admitted IS NOT NULL;
-- index workflows_by_created
CREATE INDEX "workflows_by_created"
    ON "workflows" ("created", "workflow_id");
-- index workflows_by_parent
CREATE INDEX workflows_by_parent ON workflows (parent, created, workflow_id) WHERE parent IS NOT NULL;
-- index workflows_by_status_created
CREATE INDEX "workflows_by_status_created"
    ON "workflows" ("status", "created", "workflow_id");
-- index workflows_ended
CREATE INDEX workflows_ended ON workflows (status, updated, workflow_id) WHERE status IN ('completed', 'failed', 'cancelled');
-- table inbox
CREATE TABLE "inbox" (
   "id" INTEGER PRIMARY KEY,
   "workflow_id" TEXT NOT NULL REFERENCES "workflows"("workflow_id"),
   "msg_id" TEXT NOT NULL,
   "topic" TEXT NOT NULL,
   "payload" TEXT NOT NULL DEFAULT null,
   "sender" TEXT,
   "kind" TEXT NOT NULL DEFAULT 'message',
   "call_ref" TEXT,
   "created" REAL NOT NULL,
   "consumed_seq" INTEGER
, trace TEXT, reply TEXT);
-- table journal
CREATE TABLE "journal" ( workflow_id TEXT NOT NULL REFERENCES workflows(workflow_id), seq INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', outcome TEXT NOT NULL DEFAULT 'null', attempts INTEGER NOT NULL DEFAULT 1, time REAL NOT NULL, PRIMARY KEY (workflow_id, seq)) WITHOUT ROWID;
-- table monitors
CREATE TABLE "monitors" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "watcher" TEXT,
   "created" REAL NOT NULL,
   PRIMARY KEY ("workflow_id", "watcher")
);
-- table promises
CREATE TABLE "promises" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "name" TEXT,
   "status" TEXT NOT NULL,
   "value" TEXT,
   "error" TEXT,
   "created" REAL NOT NULL,
   "completed" REAL,
   PRIMARY KEY ("workflow_id", "name")
);
-- table queue
CREATE TABLE queue ( seq INTEGER PRIMARY KEY AUTOINCREMENT, workflow_id TEXT NOT NULL UNIQUE REFERENCES workflows(workflow_id), priority INTEGER NOT NULL DEFAULT 0, dedup TEXT, enqueued REAL NOT NULL);
-- table schedules
CREATE TABLE "schedules" (
   "schedule_id" TEXT PRIMARY KEY,
   "host" TEXT NOT NULL,
   "workflow" TEXT NOT NULL,
   "input" TEXT NOT NULL DEFAULT '[]',
   "cron" TEXT,
   "every" REAL,
   "timezone" TEXT NOT NULL DEFAULT 'UTC',
   "overlap" TEXT NOT NULL DEFAULT 'skip',
   "catchup_window" REAL NOT NULL,
   "paused" INTEGER NOT NULL DEFAULT 0,
   "next_tick" REAL,
   "last_tick" REAL,
   "last_workflow" TEXT,
   "buffered_tick" REAL,
   "source" TEXT NOT NULL DEFAULT 'api',
   "created" REAL NOT NULL,
   "updated" REAL NOT NULL
);
-- table schema_version
CREATE TABLE "schema_version" (
   "version" INTEGER PRIMARY KEY,
   "applied" REAL
);
-- table sqlite_sequence
CREATE TABLE sqlite_sequence(name,seq);
-- table state
CREATE TABLE "state" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "key" TEXT,
   "value" TEXT NOT NULL,
   "updated" REAL NOT NULL,
   PRIMARY KEY ("workflow_id", "key")
);
-- table timers
CREATE TABLE "timers" (
   "workflow_id" TEXT REFERENCES "workflows"("workflow_id"),
   "seq" INTEGER,
   "deadline" REAL NOT NULL, kind TEXT,
   PRIMARY KEY ("workflow_id", "seq")
);
-- table wakeups
CREATE TABLE "wakeups" (
   "id" INTEGER PRIMARY KEY,
   "workflow_id" TEXT NOT NULL,
   "kind" TEXT NOT NULL,
   "created" REAL NOT NULL
);
-- table workflows
CREATE TABLE "workflows" (
   "workflow_id" TEXT PRIMARY KEY,
   "name" TEXT NOT NULL,
   "status" TEXT NOT NULL,
   "input" TEXT NOT NULL DEFAULT '[]',
   "result" TEXT,
   "error" TEXT,
   "parent" TEXT,
   "run_id" TEXT,
   "attempt" INTEGER NOT NULL DEFAULT 1,
   "host" TEXT,
   "created" REAL NOT NULL,
   "updated" REAL NOT NULL,
   "search" TEXT NOT NULL DEFAULT '{}',
   "memo" TEXT NOT NULL DEFAULT '{}',
   "cancel_requested" INTEGER DEFAULT 0
, trace TEXT, admitted REAL, dedup TEXT);
