-- GET /tasks/{id} from the journal names the worker a webhook task was placed on (known at its
-- 202) and, once it finished, the worker it ran on and when it started.
ALTER TABLE webhook_tasks ADD COLUMN placed_on VARCHAR;      -- the worker picked at admission
ALTER TABLE webhook_outcomes ADD COLUMN worker VARCHAR;      -- the worker it ran on
ALTER TABLE webhook_outcomes ADD COLUMN started_at DOUBLE;   -- epoch seconds; NULL: it never started

-- A scalar machine stat's variant is "total", as the reference server stores it (it was "").
UPDATE registry_stats SET variant = 'total' WHERE variant = '';
