//! The mesh's operator CLI as a library: the demo scenario, dev token minting, dead-letter
//! listing and replay (`dlq`), and the
//! process harness that the demo and the end-to-end tests share.

pub mod bench;
pub mod demo;
pub mod dlq;
pub mod harness;
pub mod receiver;
