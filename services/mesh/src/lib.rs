//! The mesh's operator CLI as a library: the demo scenario, signing keys and dev token
//! minting (`keys`), dead-letter
//! listing and replay (`dlq`), and the
//! process harness that the demo and the end-to-end tests share.

pub mod bench;
pub mod demo;
pub mod dlq;
pub mod harness;
pub mod keys;
pub mod receiver;
