//! gRPC (tonic) pieces shared by servers and clients: [`codec`], the protobuf codec of every
//! generated client and server; [`client`], the typed client of an agent.

pub mod client;
pub mod codec;
