// A TypeScript pgflow worker loop built on the reference PgflowSqlClient (@pgflow/core 0.8.1,
// `postgres` package), serving the "interop" flow of tests/e2e_apps/basic.py with the same
// handlers, the way the TypeScript edge worker talks to the database: read with a 2 s visibility,
// start_tasks, run, complete_task. It never extends visibility, so a task running longer than 2 s
// is visible to other workers meanwhile (they must leave it alone).
//
// Usage: node ts_worker.mjs '<connection JSON>' <flow_slug> <worker_id>
// Runs until SIGTERM, then prints {"executed": [[run_id, step_slug, task_index], ...]}.
import postgres from 'postgres';
import { PgflowSqlClient } from '@pgflow/core';

const [connection, flowSlug, workerId] = process.argv.slice(2);
const sql = postgres({ ...JSON.parse(connection), max: 4, onnotice: () => {} });
const client = new PgflowSqlClient(sql);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const handlers = {
  inc: async (input) => {
    await sleep((input.run.sleep ?? 0) * 1000);
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
  INSERT INTO pgflow.workers (worker_id, queue_name, function_name)
  VALUES (${workerId}::uuid, ${flowSlug}, 'ts-interop-worker')`;
console.error('ts worker ready');
while (!stopping) {
  const messages = await client.readMessages(flowSlug, 2, 10, 1, 50);
  if (messages.length === 0) continue;
  const tasks = await client.startTasks(flowSlug, messages.map((m) => m.msg_id), workerId);
  await Promise.all(
    tasks.map(async (task) => {
      const output = await handlers[task.step_slug](task.input);
      await client.completeTask(task, output);
      executed.push([task.run_id, task.step_slug, task.task_index]);
    }),
  );
}
console.log(JSON.stringify({ executed }));
await sql.end();
