//! The admin HTTP endpoint shared by the proxy and the server: /metrics, /healthz, /ready.
