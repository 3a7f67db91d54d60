//! The sidecar TCP proxy: listeners, upstream connect, byte-counting forwarding, connection reports.
