//! Istio telemetry configuration: documents, validation with diagnostics, compiled snapshots, reload.
