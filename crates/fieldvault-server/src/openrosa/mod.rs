//! The OpenRosa 1.0 surface that ODK Collect, KoboCollect and Enketo speak.
//!
//! The documents these clients read are small and their parsers are strict in surprising places
//! (namespaces on every element, a `text/xml` content type, mandatory hashes), so the rendering
//! lives apart from the handlers as pure functions that can be tested against the spec
//! (`specs/openrosa.md`) without a server or a store.

pub mod caller;
pub mod render;
pub mod respond;
pub mod routes;
