//! weft-proto holds the code generated from `proto/weft.proto`: the replicated state's commands,
//! snapshots and events, and (with the `grpc` feature) every gRPC service.
//!
//! It must never hold hand-written logic: conversions and validation live in the crates that own
//! the types (weft-state, weft-agent). Generated code is never committed.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Version 1 of weft's wire protocol.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/weft.v1.rs"));
}
