// Compiles reference flows with @pgflow/dsl and prints {flow_slug: [sql, ...]} as JSON.
// The same flows are defined in Python by tests/integration/test_dsl_parity.py.
import { Flow, compileFlow } from '@pgflow/dsl';

const linear = new Flow({ slug: 'dsl_linear', maxAttempts: 5, timeout: 30 })
  .step({ slug: 'fetch' }, (input) => input)
  .step({ slug: 'parse', dependsOn: ['fetch'], maxAttempts: 2 }, (deps) => deps)
  .step({ slug: 'save', dependsOn: ['parse'], startDelay: 3, baseDelay: 7 }, (deps) => deps);

const diamond = new Flow({ slug: 'dsl_diamond' })
  .step({ slug: 'root' }, (input) => input)
  .step({ slug: 'left', dependsOn: ['root'] }, (deps) => deps)
  .step({ slug: 'right', dependsOn: ['root'], timeout: 10 }, (deps) => deps)
  .step({ slug: 'join', dependsOn: ['left', 'right'] }, (deps) => deps);

const mapped = new Flow({ slug: 'dsl_map', baseDelay: 2 })
  .map({ slug: 'each_url' }, (url) => url)
  .map({ slug: 'each_len', array: 'each_url', maxAttempts: 4 }, (x) => x)
  .step({ slug: 'total', dependsOn: ['each_len'] }, (deps) => deps);

const out = {};
for (const flow of [linear, diamond, mapped]) {
  out[flow.slug] = compileFlow(flow);
}
console.log(JSON.stringify(out));
