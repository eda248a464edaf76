//! Typed ids: a `ProjectId` can never be passed where a `UserId` is expected.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A web or API user account.
    UserId
);
id_type!(
    /// A project: the unit of ownership, roles and encryption keys.
    ProjectId
);

impl ProjectId {
    /// The associated data that binds this project's wrapped data key to it.
    pub fn key_owner(self) -> String {
        format!("project:{}", self.0)
    }
}
