//! Tern server runtime: drives the sans-IO shard core (`tern-core`) on one
//! glommio executor per core, with rustls, the cross-core mesh and the SMS
//! gateways. See docs/ARCHITECTURE.md.

pub mod clock;
pub mod config;
pub mod error;
pub mod operator;
pub mod ops;
pub mod runtime;
pub mod server;
pub mod sms;
pub mod tls;

pub use error::EngineError;
