//! The telemetry server: gRPC ingest, dispatch, /metrics and admin endpoints.
