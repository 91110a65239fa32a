//! The `quiver.v1` messages, and the service traits and clients tonic generates for them
//! (`health_server::Health`, `vm_client::VmClient`, …): one definition for every transport.
//! The generated code uses [`crate::grpc::codec::StrictCodec`].

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("quiver.v1");
