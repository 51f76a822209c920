// A TypeScript pgflow worker loop built on the reference PgflowSqlClient (@pgflow/core 0.8.1,
// `postgres` package), serving the "interop" flow of tests/e2e_apps/basic.py with the same
// handlers, the way the 0.8.1 edge worker's main loop runs: heartbeat (at most every 5 s, with
// its Queries.sendHeartbeat statement), read with a 2 s visibility, start_tasks, run the batch and
// await all of it, complete_task or fail_task. So it never heartbeats while a batch runs, and it
// never extends visibility: a task running longer than 2 s is visible to other workers meanwhile
// (they must leave it alone).
//
// Usage: node ts_worker.mjs '<connection JSON>' <flow_slug> <worker_id>
// Runs until SIGTERM, then prints {"executed": [[run_id, step_slug, task_index], ...]}.
import { existsSync } from 'node:fs';
import postgres from 'postgres';
import { PgflowSqlClient } from '@pgflow/core';

const [connection, flowSlug, workerId] = process.argv.slice(2);
const sql = postgres({ ...JSON.parse(connection), max: 4, onnotice: () => {} });
const client = new PgflowSqlClient(sql);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const HEARTBEAT_INTERVAL_MS = 5000;

const handlers = {
  // run.n + 1 after run.sleep seconds, or once the file run.until exists.
  inc: async (input) => {
    await sleep((input.run.sleep ?? 0) * 1000);
    while (input.run.until && !existsSync(input.run.until)) await sleep(50);
    return input.run.n + 1;
  },
  dbl: async (input) => input.inc * 2,
};

let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
});

const executed = [];
await sql`
  INSERT INTO pgflow.workers (queue_name, worker_id, function_name)
  VALUES (${flowSlug}, ${workerId}::uuid, 'ts-interop-worker')`;
console.error('ts worker ready');
let lastHeartbeat = 0;
while (!stopping) {
  if (Date.now() - lastHeartbeat >= HEARTBEAT_INTERVAL_MS) {
    const [beat] = await sql`
      UPDATE pgflow.workers AS w
      SET last_heartbeat_at = clock_timestamp()
      WHERE w.worker_id = ${workerId}::uuid
      RETURNING (w.deprecated_at IS NOT NULL) AS is_deprecated`;
    lastHeartbeat = Date.now();
    if (beat?.is_deprecated) break;
  }
  const messages = await client.readMessages(flowSlug, 2, 10, 2, 100);
  if (messages.length === 0) continue;
  const tasks = await client.startTasks(flowSlug, messages.map((m) => m.msg_id), workerId);
  await Promise.all(
    tasks.map(async (task) => {
      let output;
      try {
        output = await handlers[task.step_slug](task.input);
      } catch (error) {
        await client.failTask(task, error);
        return;
      }
      await client.completeTask(task, output);
      executed.push([task.run_id, task.step_slug, task.task_index]);
    }),
  );
}
console.log(JSON.stringify({ executed }));
await sql.end();
