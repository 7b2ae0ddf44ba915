//! The mesh's operator CLI as a library: the demo scenario, dev token minting, and the
//! process harness that the demo and the end-to-end tests share.

pub mod bench;
pub mod demo;
pub mod harness;
pub mod receiver;
