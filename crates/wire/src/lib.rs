//! Mixer v1 wire format: protobuf messages, compressed attributes, gRPC service and client.
