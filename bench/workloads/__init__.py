"""The workloads, one module each (W1 to W5); ``docs/benchmarks.md`` says what each measures."""
