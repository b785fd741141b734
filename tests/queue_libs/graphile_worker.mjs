// Seeds a graphile-worker database through graphile-worker's own API, for
// tests/test_preset_graphile_worker.py and bench/queue_presets.py:
//
//   node graphile_worker.mjs seed [schema]      the jobs below (after the migrations)
//   node graphile_worker.mjs install [schema]   the schema only (runMigrations)
//
// The database comes from libpq's environment variables (PGHOST, PGPORT, PGUSER,
// PGDATABASE), which graphile-worker reads when it is given no connection string.
//
// runMigrations creates the schema, addJob enqueues, runOnce works the jobs
// that are due (completing or failing them as the task functions do), and
// run() takes one job that never finishes before the process exits without a
// graceful shutdown, as a crashed worker leaves it (locked). Task identifiers
// are the exporter's queue labels:
//
//   send_email      40 due for 20 minutes (runAt in the past), 3 due in an hour
//   resize_image    5 completed (deleted by graphile-worker), 1 failed once and
//                   waiting for its retry, 1 failed for good (max_attempts 1)
//   generate_report 1 locked by a worker that died
//
// Prints one JSON line: what was done, for the test to compare with.
// GRAPHILE_WORKER_PACKAGE: which installed copy (graphile-worker-18: 0.18, on node 22)
const { Logger, makeWorkerUtils, run, runMigrations, runOnce } = await import(
  process.env.GRAPHILE_WORKER_PACKAGE || "graphile-worker"
);

const [command, schema = "graphile_worker"] = process.argv.slice(2);
if (command !== "seed" && command !== "install") {
  console.error("usage: node graphile_worker.mjs seed|install [schema]");
  process.exit(2);
}
// graphile-worker logs every job it runs, and the failures here are on purpose: keep stdout
// for the summary line
const logger = new Logger(() => () => {});
const options = { schema, logger };
const quiet = { noHandleSignals: true, concurrency: 1 };

await runMigrations(options);
if (command === "install") process.exit(0);
const utils = await makeWorkerUtils(options);
const minutesAgo = (m) => new Date(Date.now() - m * 60_000);
try {
  for (let i = 0; i < 40; i++) {
    await utils.addJob("send_email", { to: `user${i}@example.org` }, { runAt: minutesAgo(20) });
  }
  for (let i = 0; i < 3; i++) {
    await utils.addJob("send_email", { digest: i }, { runAt: minutesAgo(-60) });
  }
  for (let i = 0; i < 5; i++) {
    await utils.addJob("resize_image", { id: i });
  }
  await utils.addJob("resize_image", { id: "flaky", fail: true }, { maxAttempts: 5 });
  await utils.addJob("resize_image", { id: "doomed", fail: true }, { maxAttempts: 1 });
  await utils.addJob("generate_report", { month: "2026-10" });
} finally {
  await utils.release();
}

// resize_image only: send_email and generate_report stay where they are
const resize = async (payload) => {
  if (payload.fail) throw new Error(`cannot resize ${payload.id}`);
};
await runOnce({ ...options, ...quiet }, { resize_image: resize });

// a worker takes generate_report and never returns; the process then ends abruptly
let taken;
const started = new Promise((resolve) => (taken = resolve));
await run({ ...options, ...quiet }, {
  generate_report: () => {
    taken();
    return new Promise(() => {});
  },
});
const timeout = setTimeout(() => {
  console.error("generate_report was not taken within 30 s");
  process.exit(1);
}, 30_000);
await started;
clearTimeout(timeout);
console.log(
  JSON.stringify({ pending: 40, scheduled: 3, completed: 5, retrying: 1, failed: 1, locked: 1 }),
);
process.exit(0);

