"""specwave library: spec models, store, planner, prompt, agents, results, Prefect tasks."""
