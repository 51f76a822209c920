-- Claims that skip the second visibility update when the read already hid the message long
-- enough: the worker reads with a visibility of (its longest step timeout + 2 s), capped, so a
-- claim only extends the messages of steps whose timeout outlasts what the read gave them.

DROP FUNCTION IF EXISTS pgflow_kombu.claim_tasks(text, bigint[], uuid);

-- As in 0030: pgflow.start_tasks, then visibility = (step or flow timeout) + 2 s, but only for
-- tasks whose timeout + 2 exceeds read_visibility (the seconds the read hid the message for).
CREATE OR REPLACE FUNCTION pgflow_kombu.claim_tasks(
    flow_slug text,
    msg_ids bigint[],
    worker_id uuid,
    read_visibility integer DEFAULT 0
) RETURNS TABLE (
    run_id uuid,
    step_slug text,
    task_index integer,
    msg_id bigint,
    input jsonb,
    attempt integer,
    timeout integer
)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    claimed pgflow.step_task_record[];
    extend_ids bigint[];
    extend_by integer[];
BEGIN
    SELECT coalesce(array_agg(s), '{}')
    INTO claimed
    FROM pgflow.start_tasks(flow_slug => claim_tasks.flow_slug,
                            msg_ids => claim_tasks.msg_ids,
                            worker_id => claim_tasks.worker_id) AS s;
    IF cardinality(claimed) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    SELECT c.run_id, c.step_slug, c.task_index, c.msg_id, c.input, t.attempts_count,
           coalesce(st.opt_timeout, f.opt_timeout)
    FROM unnest(claimed) AS c
    JOIN pgflow.step_tasks AS t
      ON t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index
    JOIN pgflow.steps AS st ON st.flow_slug = c.flow_slug AND st.step_slug = c.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = c.flow_slug
    ORDER BY c.msg_id;

    SELECT array_agg(c.msg_id ORDER BY c.msg_id),
           array_agg(coalesce(st.opt_timeout, f.opt_timeout) + 2 ORDER BY c.msg_id)
    INTO extend_ids, extend_by
    FROM unnest(claimed) AS c
    JOIN pgflow.steps AS st ON st.flow_slug = c.flow_slug AND st.step_slug = c.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = c.flow_slug
    WHERE coalesce(st.opt_timeout, f.opt_timeout) + 2 > claim_tasks.read_visibility;
    IF extend_ids IS NOT NULL THEN
        PERFORM pgflow.set_vt_batch(claim_tasks.flow_slug, extend_ids, extend_by);
    END IF;
END;
$$;
