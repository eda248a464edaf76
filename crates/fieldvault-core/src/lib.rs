//! Fieldvault's domain: typed ids, account rules, authorization, errors, and reading XForms and
//! OpenRosa submissions. No I/O, no async.
#![warn(missing_docs)]

pub mod account;
pub mod authz;
pub mod error;
pub mod flatten;
pub mod ids;
pub mod kobo_query;
pub mod odata;
pub mod odata_rows;
pub mod password_policy;
pub mod schema;
pub mod softlock;
pub mod submission;
pub mod xform;
pub mod xform_rewrite;
mod xml;
pub mod xml_edit;

pub use authz::{Actor, Resource, Scopes, Verb, authorize};
pub use error::CoreError;
pub use flatten::{Instance, parse_instance};
pub use ids::{ProjectId, UserId};
pub use schema::{FormSchema, parse_schema};
pub use submission::{
    EncryptedEnvelope, IntakeDecision, SubmissionMeta, decide, parse_submission,
    parse_submission_with_attachments,
};
pub use xform::{XForm, md5_hash, parse_xform};
