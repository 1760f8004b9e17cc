-- Lost agents: when a task's agent was last heard from (hello with the task token, progress),
-- and when the appliance gave up on a silent agent. A task failed that way refuses its
-- token's late reports (and journals them): a new task may already own the machine.
ALTER TABLE tasks ADD COLUMN heard_at INTEGER;
ALTER TABLE tasks ADD COLUMN lost_at INTEGER;
UPDATE tasks SET heard_at = COALESCE(updated_at, started_at, created_at) WHERE state = 'running';
