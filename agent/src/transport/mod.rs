//! The transport adapters: gRPC ([`grpc`], tonic over mutual TLS) and Iroh ([`iroh`],
//! `quiver/rpc/1`). Each decodes a call, checks that its service is served on that transport
//! (`services::ServingModes`), calls the one implementation in `crate::services`, records metrics and encodes
//! the reply or [`crate::Error::to_rpc`]. No behaviour lives here.

pub mod faults;
pub mod grpc;
pub mod iroh;
pub mod timed;
