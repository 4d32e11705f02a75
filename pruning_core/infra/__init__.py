"""Infrastructure: the run store (SQLite), running one configuration end to end, the job queue and the CLI."""
