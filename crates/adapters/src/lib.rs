//! Handlers: Prometheus metrics, stdio access logs, workload identity registry.
