// Works the tasks of one pgflow run with the reference PgflowSqlClient (@pgflow/core 0.8.1) and
// the `postgres` package, the way the TypeScript worker talks to the database.
//
// Usage: node interop_sql_client.mjs '<connection JSON>' <flow_slug> <run_id> <worker_id>
// The run's flow is tests/integration/test_interop_node.py's "interop" flow:
//   fetch (single) -> double (map over fetch) -> total (single, after double and fetch)
// total fails its first attempt, so failTask and the retry path are exercised too.
// Prints a JSON summary: what each task received and how the run ended.
import postgres from 'postgres';
import { PgflowSqlClient } from '@pgflow/core';

const [connection, flowSlug, runId, workerId] = process.argv.slice(2);
const sql = postgres({ ...JSON.parse(connection), max: 1, onnotice: () => {} });
const client = new PgflowSqlClient(sql);

const handlers = {
  fetch: (input) => input.run.numbers,
  double: (input) => input * 2,
  total: (input, attempt) => {
    if (attempt === 1) throw new Error('flaky on first attempt');
    return input.double.reduce((a, b) => a + b, 0) + input.fetch.length;
  },
};

const seen = [];
const attempts = {};
try {
  await sql`
    INSERT INTO pgflow.workers (worker_id, queue_name, function_name)
    VALUES (${workerId}::uuid, ${flowSlug}, 'interop_sql_client')`;
  for (let round = 0; round < 50; round++) {
    const [run] = await sql`SELECT status, output FROM pgflow.runs WHERE run_id = ${runId}::uuid`;
    if (run.status !== 'started') {
      console.log(JSON.stringify({ status: run.status, output: run.output, seen }));
      break;
    }
    const messages = await client.readMessages(flowSlug, 5, 10, 1, 50);
    if (messages.length === 0) continue;
    const tasks = await client.startTasks(flowSlug, messages.map((m) => m.msg_id), workerId);
    for (const task of tasks) {
      const key = `${task.step_slug}:${task.task_index}`;
      attempts[key] = (attempts[key] || 0) + 1;
      seen.push({ step_slug: task.step_slug, task_index: task.task_index, input: task.input });
      try {
        await client.completeTask(task, handlers[task.step_slug](task.input, attempts[key]));
      } catch (error) {
        await client.failTask(task, error);
      }
    }
  }
} finally {
  await sql.end();
}
