"""What a run tells people: console progress, ``metrics.jsonl``, plots, drawn batches, wandb, the
MLPerf log and its compliance check. The trainer talks to one :class:`reporter.RunReporter`."""
