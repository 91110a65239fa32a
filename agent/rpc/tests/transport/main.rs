//! The Iroh transport over real loopback endpoints: calls, streams, batching, deadlines,
//! heartbeats, access at the handshake, hostile input, reconnects and priorities.
//!
//! Run: `cargo test -p quiver-rpc --test transport`.

mod access;
mod calls;
mod common;
mod priority;
mod reconnect;
mod robustness;
mod zero_rtt;
