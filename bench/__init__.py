"""The benchmark harness. At the top: what every room shares (config, records, boundary) and the command line (cli);
the rooms: measure, runner, reporting, tools (docs/architecture.md)."""
