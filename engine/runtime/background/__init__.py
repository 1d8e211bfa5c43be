"""Background work: the worker tick, timers fired exactly once, the outbox and its delivery, scheduled jobs."""
