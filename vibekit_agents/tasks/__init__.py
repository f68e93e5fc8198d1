"""Work that runs inside sandboxed child processes (see vibekit_agents.sandbox): preparing the
workload and references, running a candidate for the judge, running the scenario checker,
benchmarking and profiling for the evaluator. Each entry point takes and returns JSON data."""
