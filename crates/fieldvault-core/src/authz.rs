//! The one authorization function (DESIGN §2): `authorize(actor, verb, resource)`.
//!
//! Every service function calls it before any protected read or any write; nothing else in the
//! code base decides who may do what. Verbs have stable `noun.verb` names shared by the audit log
//! and the error catalogue, so renaming one is a compile error, not a data migration.

use crate::{CoreError, ProjectId, UserId};

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator at the server's command line (`fieldvault user create …`). Holds the OS user
    /// for the audit log; trusted because it can already read the key file.
    Operator {
        /// The operating-system user running the command.
        os_user: String,
    },
    /// A signed-in account.
    User {
        /// The account.
        id: UserId,
        /// Site-wide administrator.
        superuser: bool,
    },
    /// Nobody has authenticated.
    Anonymous,
}

/// What is being done. `as_str` gives the stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Create an account.
    UserCreate,
    /// List accounts.
    UserList,
    /// Create a project.
    ProjectCreate,
    /// Read a project's metadata.
    ProjectRead,
    /// Re-wrap every data key under a new master key.
    KeysRotate,
    /// Read the effective configuration.
    ConfigRead,
}

impl Verb {
    /// Every verb, for round-trip tests and the authorization matrix.
    pub const ALL: &'static [Verb] = &[
        Verb::UserCreate,
        Verb::UserList,
        Verb::ProjectCreate,
        Verb::ProjectRead,
        Verb::KeysRotate,
        Verb::ConfigRead,
    ];

    /// The stable `noun.verb` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::UserCreate => "user.create",
            Verb::UserList => "user.list",
            Verb::ProjectCreate => "project.create",
            Verb::ProjectRead => "project.read",
            Verb::KeysRotate => "keys.rotate",
            Verb::ConfigRead => "config.read",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// What the verb applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The installation as a whole.
    Site,
    /// One project.
    Project(ProjectId),
}

/// Decides whether `actor` may perform `verb` on `resource`.
pub fn authorize(actor: &Actor, verb: Verb, resource: Resource) -> Result<(), CoreError> {
    let allowed = match actor {
        Actor::Operator { .. } => true,
        Actor::User {
            superuser: true, ..
        } => match (verb, resource) {
            // M6: administrators manage the site but hold no implicit right to project data;
            // project roles arrive with the accounts issue and are granted by owners.
            (Verb::ProjectRead, Resource::Project(_)) => false,
            _ => true,
        },
        Actor::User { .. } => matches!(verb, Verb::ProjectCreate),
        Actor::Anonymous => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(CoreError::Denied {
            verb: verb.as_str(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for v in Verb::ALL {
            assert_eq!(Verb::parse(v.as_str()), Some(*v));
            assert!(seen.insert(v.as_str()));
        }
        assert_eq!(Verb::parse("nope"), None);
    }

    #[test]
    fn matrix() {
        let op = Actor::Operator {
            os_user: "root".into(),
        };
        let admin = Actor::User {
            id: UserId(1),
            superuser: true,
        };
        let user = Actor::User {
            id: UserId(2),
            superuser: false,
        };
        let p = Resource::Project(ProjectId(1));
        for v in Verb::ALL {
            assert!(authorize(&op, *v, Resource::Site).is_ok());
            assert!(authorize(&Actor::Anonymous, *v, Resource::Site).is_err());
        }
        assert!(authorize(&admin, Verb::UserCreate, Resource::Site).is_ok());
        assert!(authorize(&admin, Verb::ProjectRead, p).is_err());
        assert!(authorize(&user, Verb::UserCreate, Resource::Site).is_err());
        assert!(authorize(&user, Verb::ProjectCreate, Resource::Site).is_ok());
        assert_eq!(
            authorize(&user, Verb::KeysRotate, Resource::Site),
            Err(CoreError::Denied {
                verb: "keys.rotate"
            })
        );
    }
}
