"""Reports over runs and predictions (plots, summaries): shells over the API, like the CLI."""
