// Works one run of a conditional flow with the reference PgflowSqlClient (@pgflow/core 0.8.1):
// a TypeScript 0.8.1 worker knows nothing of conditions, yet on our schema it gets the same
// skipping, because the database decides it.
//
// Usage: node conditional_sql_client.mjs '<connection JSON>' <flow_slug> <run_id> <worker_id>
// The flow is tests/integration/test_conditions_node.py's "tscond":
//   pick (runs only for kind "a"), base, boom (always throws; skipped once exhausted),
//   join (after pick, base and boom: returns the keys of its input).
// Prints a JSON summary: what each task received and how the run ended.
import postgres from 'postgres';
import { PgflowSqlClient } from '@pgflow/core';

const [connection, flowSlug, runId, workerId] = process.argv.slice(2);
const sql = postgres({ ...JSON.parse(connection), max: 1, onnotice: () => {} });
const client = new PgflowSqlClient(sql);

const handlers = {
  pick: () => 'picked',
  base: (input) => input.run.n,
  boom: () => {
    throw new Error('boom');
  },
  join: (input) => Object.keys(input).sort(),
};

const seen = [];
try {
  await sql`
    INSERT INTO pgflow.workers (worker_id, queue_name, function_name)
    VALUES (${workerId}::uuid, ${flowSlug}, 'conditional_sql_client')`;
  for (let round = 0; round < 50; round++) {
    const [run] = await sql`SELECT status, output FROM pgflow.runs WHERE run_id = ${runId}::uuid`;
    if (run.status !== 'started') {
      const states = await sql`
        SELECT step_slug, status FROM pgflow.step_states
        WHERE run_id = ${runId}::uuid ORDER BY step_slug`;
      console.log(JSON.stringify({ status: run.status, output: run.output, seen, states }));
      break;
    }
    const messages = await client.readMessages(flowSlug, 5, 10, 1, 50);
    if (messages.length === 0) continue;
    const tasks = await client.startTasks(flowSlug, messages.map((m) => m.msg_id), workerId);
    for (const task of tasks) {
      seen.push({ step_slug: task.step_slug, input: task.input });
      try {
        await client.completeTask(task, handlers[task.step_slug](task.input));
      } catch (error) {
        await client.failTask(task, error);
      }
    }
  }
} finally {
  await sql.end();
}
