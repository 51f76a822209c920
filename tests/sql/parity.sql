-- name: parity_flows
SELECT flow_slug, opt_max_attempts, opt_base_delay, opt_timeout FROM pgflow.flows ORDER BY 1;

-- name: parity_steps
SELECT flow_slug, step_slug, step_type, step_index, deps_count, opt_max_attempts, opt_base_delay,
       opt_timeout, opt_start_delay
FROM pgflow.steps ORDER BY 1, 4;

-- name: parity_deps
SELECT flow_slug, dep_slug, step_slug FROM pgflow.deps ORDER BY 1, 2, 3;
