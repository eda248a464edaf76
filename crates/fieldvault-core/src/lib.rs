//! Fieldvault's domain: typed ids, account rules, authorization and errors. No I/O, no async.
#![warn(missing_docs)]

pub mod account;
pub mod authz;
pub mod error;
pub mod ids;

pub use authz::{Actor, Resource, Verb, authorize};
pub use error::CoreError;
pub use ids::{ProjectId, UserId};
