//! The one authorization function (DESIGN §2): `authorize(actor, verb, resource)`.
//!
//! Every service function calls it before any protected read or any write; nothing else in the
//! code base decides who may do what. Verbs have stable `noun.verb` names shared by the audit log
//! and the error catalogue, so renaming one is a compile error, not a data migration.
//!
//! Project roles follow ODK Central: a **manager** does everything in the project; an **editor**
//! (KoboToolbox's "edit submissions") reads, submits and changes data — review states, edits,
//! validation statuses — but cannot delete, redact or change forms; a **viewer**
//! reads forms and data; a **data collector** lists, downloads and fills forms; an **app user**
//! (a collector token) lists, downloads and fills only the forms assigned to it. A site
//! administrator manages accounts and may create projects, but holds no implicit right to project
//! data (M6): an owner must grant a role.

use crate::{CoreError, ProjectId, UserId};

/// A role in one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything in the project.
    Manager,
    /// Read, submit and change submissions; no deletion, redaction or form changes.
    Editor,
    /// Read forms and submissions.
    Viewer,
    /// List, download and fill forms.
    DataCollector,
}

impl Role {
    /// Stable name (`manager`, `viewer`, `formfill` as in Central).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::DataCollector => "formfill",
        }
    }

    /// Every role, for the authorization matrix.
    pub const ALL: &'static [Role] = &[
        Role::Manager,
        Role::Editor,
        Role::Viewer,
        Role::DataCollector,
    ];

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

/// What an API token may be used for. A password or session login carries [`Scopes::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// Read projects, forms, submissions and exports.
    pub const READ_DATA: Scopes = Scopes(1);
    /// Submit and change data.
    pub const WRITE_DATA: Scopes = Scopes(2);
    /// Create and configure projects, forms and collectors.
    pub const MANAGE_PROJECTS: Scopes = Scopes(4);
    /// Site administration.
    pub const ADMIN: Scopes = Scopes(8);
    /// The account's own credentials: sessions, API tokens, second factor, password, deletion.
    /// Only a password or a session carries it; it has no name, so no API token can: a leaked
    /// token must not be able to mint more tokens, enrol a second factor or end its owner's
    /// sessions.
    pub const ACCOUNT: Scopes = Scopes(16);
    /// Everything the account itself may do.
    pub const ALL: Scopes = Scopes(31);
    /// Stable names, as API clients send them.
    pub const NAMES: &'static [(&'static str, Scopes)] = &[
        ("data:read", Scopes::READ_DATA),
        ("data:write", Scopes::WRITE_DATA),
        ("projects:manage", Scopes::MANAGE_PROJECTS),
        ("admin", Scopes::ADMIN),
    ];

    /// Parses a list of scope names; unknown names are an error naming them.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, CoreError> {
        let mut bits = 0u8;
        for n in names {
            let (_, s) = Scopes::NAMES
                .iter()
                .find(|(name, _)| *name == n)
                .ok_or_else(|| {
                    CoreError::invalid(
                        "scopes",
                        format!(
                            "unknown scope {n:?}; use data:read, data:write, projects:manage, admin"
                        ),
                    )
                })?;
            bits |= s.0;
        }
        if bits == 0 {
            return Err(CoreError::invalid("scopes", "choose at least one scope"));
        }
        Ok(Scopes(bits))
    }

    /// The names of the scopes held.
    pub fn names(self) -> Vec<&'static str> {
        Scopes::NAMES
            .iter()
            .filter(|(_, s)| self.0 & s.0 != 0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Only the scopes held by both.
    pub fn intersect(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    /// True when every scope of `other` is held.
    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The scope a verb needs.
    pub fn required_for(verb: Verb) -> Scopes {
        match verb {
            Verb::ProjectRead | Verb::FormRead | Verb::SubmissionRead => Scopes::READ_DATA,
            Verb::SubmissionCreate | Verb::SubmissionUpdate | Verb::SubmissionDelete => {
                Scopes::WRITE_DATA
            }
            Verb::ProjectCreate
            | Verb::ProjectUpdate
            | Verb::ProjectDelete
            | Verb::FormUpdate
            | Verb::AppUserManage => Scopes::MANAGE_PROJECTS,
            Verb::UserCreate
            | Verb::UserList
            | Verb::UserSuspend
            | Verb::UserManage
            | Verb::UserInvite
            | Verb::KeysRotate
            | Verb::ConfigRead
            | Verb::RestrictionManage => Scopes::ADMIN,
            Verb::AccountManage => Scopes::ACCOUNT,
        }
    }
}

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator at the server's command line (`fieldvault user create …`). Holds the OS user
    /// for the audit log; trusted because it can already read the key file.
    Operator {
        /// The operating-system user running the command.
        os_user: String,
    },
    /// A signed-in account, with its role in the project being acted on (loaded by the service).
    User {
        /// The account.
        id: UserId,
        /// Site-wide administrator.
        superuser: bool,
        /// The account's role in the project named by the resource, if any.
        project_role: Option<(ProjectId, Role)>,
        /// What the credential may be used for ([`Scopes::ALL`] for a password or session).
        scopes: Scopes,
        /// The account signs in with a second factor. Site administration needs it (M5): an
        /// administrator without 2FA holds no site-level verb until enrolled.
        second_factor: bool,
    },
    /// A collector token of one project, with the forms assigned to it.
    AppUser {
        /// The app user's id.
        id: i64,
        /// Its project.
        project: ProjectId,
        /// Form ids it may see and fill.
        forms: Vec<i64>,
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
    /// Suspend or reactivate an account.
    UserSuspend,
    /// Manage another account's credentials: issue a password-reset link, force a password
    /// reset, reset or require its second factor.
    UserManage,
    /// Create an invite link for sign-up.
    UserInvite,
    /// Create a project.
    ProjectCreate,
    /// Read a project's metadata.
    ProjectRead,
    /// Rename, describe, archive a project; grant roles.
    ProjectUpdate,
    /// Delete a project.
    ProjectDelete,
    /// Upload a form, a draft, media; publish; change state.
    FormUpdate,
    /// Read form definitions (JSON and XML) and media; the OpenRosa form list.
    FormRead,
    /// Submit data to a form.
    SubmissionCreate,
    /// Read submissions and their attachments.
    SubmissionRead,
    /// Change submissions: set a review state, edit values (a new version), set validation
    /// statuses.
    SubmissionUpdate,
    /// Delete submissions (to the trash), restore them, and redact (irreversibly replace) values.
    SubmissionDelete,
    /// Create, list and revoke collectors (app users) and their form assignments.
    AppUserManage,
    /// Re-wrap every data key under a new master key.
    KeysRotate,
    /// Read the effective configuration.
    ConfigRead,
    /// List and lift automatic rate-limit restrictions.
    RestrictionManage,
    /// Manage one's own account: sessions, API tokens, second factor, password, deletion.
    AccountManage,
}

impl Verb {
    /// Every verb, for round-trip tests and the authorization matrix.
    pub const ALL: &'static [Verb] = &[
        Verb::UserCreate,
        Verb::UserList,
        Verb::UserSuspend,
        Verb::UserManage,
        Verb::UserInvite,
        Verb::ProjectCreate,
        Verb::ProjectRead,
        Verb::ProjectUpdate,
        Verb::ProjectDelete,
        Verb::FormUpdate,
        Verb::FormRead,
        Verb::SubmissionCreate,
        Verb::SubmissionRead,
        Verb::SubmissionUpdate,
        Verb::SubmissionDelete,
        Verb::AppUserManage,
        Verb::KeysRotate,
        Verb::ConfigRead,
        Verb::RestrictionManage,
        Verb::AccountManage,
    ];

    /// The stable `noun.verb` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::UserCreate => "user.create",
            Verb::UserList => "user.list",
            Verb::UserSuspend => "user.suspend",
            Verb::UserManage => "user.manage",
            Verb::UserInvite => "user.invite",
            Verb::ProjectCreate => "project.create",
            Verb::ProjectRead => "project.read",
            Verb::ProjectUpdate => "project.update",
            Verb::ProjectDelete => "project.delete",
            Verb::FormUpdate => "form.update",
            Verb::FormRead => "form.read",
            Verb::SubmissionCreate => "submission.create",
            Verb::SubmissionRead => "submission.read",
            Verb::SubmissionUpdate => "submission.update",
            Verb::SubmissionDelete => "submission.delete",
            Verb::AppUserManage => "app_user.manage",
            Verb::KeysRotate => "keys.rotate",
            Verb::ConfigRead => "config.read",
            Verb::RestrictionManage => "restriction.manage",
            Verb::AccountManage => "account.manage",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    fn site_level(self) -> bool {
        matches!(
            self,
            Verb::UserCreate
                | Verb::UserList
                | Verb::UserSuspend
                | Verb::UserManage
                | Verb::UserInvite
                | Verb::KeysRotate
                | Verb::ConfigRead
                | Verb::RestrictionManage
        )
    }
}

/// What the verb applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The installation as a whole.
    Site,
    /// One project.
    Project(ProjectId),
    /// One form of a project.
    Form {
        /// The project.
        project: ProjectId,
        /// The form's store id.
        form: i64,
        /// Whether the form accepts anonymous submissions.
        anonymous: bool,
    },
}

impl Resource {
    fn project(self) -> Option<ProjectId> {
        match self {
            Resource::Site => None,
            Resource::Project(p) | Resource::Form { project: p, .. } => Some(p),
        }
    }
}

fn role_allows(role: Role, verb: Verb) -> bool {
    match role {
        Role::Manager => {
            !verb.site_level() && !matches!(verb, Verb::ProjectCreate | Verb::AccountManage)
        }
        Role::Editor => matches!(
            verb,
            Verb::ProjectRead
                | Verb::FormRead
                | Verb::SubmissionRead
                | Verb::SubmissionCreate
                | Verb::SubmissionUpdate
        ),
        Role::Viewer => matches!(
            verb,
            Verb::ProjectRead | Verb::FormRead | Verb::SubmissionRead
        ),
        Role::DataCollector => matches!(
            verb,
            Verb::ProjectRead | Verb::FormRead | Verb::SubmissionCreate
        ),
    }
}

/// A form open to anonymous submission is public: anyone may download and fill it.
fn public_form(verb: Verb, resource: Resource) -> bool {
    matches!(verb, Verb::FormRead | Verb::SubmissionCreate)
        && matches!(
            resource,
            Resource::Form {
                anonymous: true,
                ..
            }
        )
}

/// Decides whether `actor` may perform `verb` on `resource`.
pub fn authorize(actor: &Actor, verb: Verb, resource: Resource) -> Result<(), CoreError> {
    let allowed = match actor {
        Actor::Operator { .. } => true,
        Actor::User { scopes, .. } if !scopes.contains(Scopes::required_for(verb)) => false,
        Actor::User {
            superuser,
            project_role,
            second_factor,
            ..
        } => {
            let by_role = match (project_role, resource.project()) {
                (Some((rp, role)), Some(p)) if *rp == p => role_allows(*role, verb),
                _ => false,
            };
            let by_site = *superuser && *second_factor && verb.site_level();
            let anyone = matches!(verb, Verb::ProjectCreate | Verb::AccountManage)
                || public_form(verb, resource);
            by_role || by_site || anyone
        }
        Actor::AppUser { project, forms, .. } => match resource {
            Resource::Form {
                project: p,
                form,
                anonymous,
            } if p == *project => {
                matches!(verb, Verb::FormRead | Verb::SubmissionCreate)
                    && (forms.contains(&form) || anonymous)
            }
            Resource::Project(p) if p == *project => verb == Verb::ProjectRead,
            _ => false,
        },
        Actor::Anonymous => public_form(verb, resource),
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
        for r in Role::ALL.iter().copied() {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    fn user(role: Option<Role>, superuser: bool) -> Actor {
        Actor::User {
            id: UserId(2),
            superuser,
            project_role: role.map(|r| (ProjectId(1), r)),
            scopes: Scopes::ALL,
            second_factor: true,
        }
    }

    #[test]
    fn token_scopes_narrow_what_a_role_allows() {
        let f = Resource::Form {
            project: ProjectId(1),
            form: 10,
            anonymous: false,
        };
        let read_only = Actor::User {
            id: UserId(2),
            superuser: true,
            project_role: Some((ProjectId(1), Role::Manager)),
            scopes: Scopes::parse(["data:read"]).unwrap(),
            second_factor: true,
        };
        assert!(authorize(&read_only, Verb::SubmissionRead, f).is_ok());
        for v in [
            Verb::SubmissionCreate,
            Verb::FormUpdate,
            Verb::AppUserManage,
            Verb::ProjectCreate,
            Verb::AccountManage,
        ] {
            assert!(authorize(&read_only, v, f).is_err(), "{v:?}");
        }
        assert!(authorize(&read_only, Verb::UserCreate, Resource::Site).is_err());
        assert!(Scopes::parse(["data:read", "nope"]).is_err());
        assert!(Scopes::parse([]).is_err());
        let s = Scopes::parse(["admin", "data:write"]).unwrap();
        assert_eq!(s.names(), vec!["data:write", "admin"]);
        for v in Verb::ALL {
            assert!(Scopes::ALL.contains(Scopes::required_for(*v)));
        }
    }

    /// The whole matrix: every actor kind × every verb on a project, a form and another project.
    #[test]
    fn matrix() {
        let p = Resource::Project(ProjectId(1));
        let f = Resource::Form {
            project: ProjectId(1),
            form: 10,
            anonymous: false,
        };
        let anon_form = Resource::Form {
            project: ProjectId(1),
            form: 11,
            anonymous: true,
        };
        let other = Resource::Form {
            project: ProjectId(2),
            form: 20,
            anonymous: false,
        };
        let app = Actor::AppUser {
            id: 5,
            project: ProjectId(1),
            forms: vec![10],
        };
        let op = Actor::Operator {
            os_user: "root".into(),
        };
        use Verb::*;
        let expect: &[(&Actor, Resource, &[Verb])] = &[
            (&op, f, Verb::ALL),
            (
                &user(Some(Role::Manager), false),
                f,
                &[
                    ProjectRead,
                    ProjectUpdate,
                    ProjectDelete,
                    FormUpdate,
                    FormRead,
                    SubmissionCreate,
                    SubmissionRead,
                    SubmissionUpdate,
                    SubmissionDelete,
                    AppUserManage,
                    ProjectCreate,
                    AccountManage,
                ],
            ),
            (
                &user(Some(Role::Editor), false),
                f,
                &[
                    ProjectRead,
                    FormRead,
                    SubmissionRead,
                    SubmissionCreate,
                    SubmissionUpdate,
                    ProjectCreate,
                    AccountManage,
                ],
            ),
            (
                &user(Some(Role::Viewer), false),
                f,
                &[
                    ProjectRead,
                    FormRead,
                    SubmissionRead,
                    ProjectCreate,
                    AccountManage,
                ],
            ),
            (
                &user(Some(Role::DataCollector), false),
                f,
                &[
                    ProjectRead,
                    FormRead,
                    SubmissionCreate,
                    ProjectCreate,
                    AccountManage,
                ],
            ),
            (&user(None, false), f, &[ProjectCreate, AccountManage]),
            (
                &user(None, true),
                f,
                &[
                    UserCreate,
                    UserList,
                    UserSuspend,
                    UserManage,
                    UserInvite,
                    KeysRotate,
                    ConfigRead,
                    RestrictionManage,
                    ProjectCreate,
                    AccountManage,
                ],
            ),
            (
                &user(Some(Role::Manager), false),
                other,
                &[ProjectCreate, AccountManage],
            ),
            (&app, f, &[FormRead, SubmissionCreate]),
            (&app, other, &[]),
            (&app, anon_form, &[FormRead, SubmissionCreate]),
            (&app, p, &[ProjectRead]),
            (&Actor::Anonymous, f, &[]),
            (&Actor::Anonymous, anon_form, &[FormRead, SubmissionCreate]),
            (
                &user(None, false),
                anon_form,
                &[FormRead, SubmissionCreate, ProjectCreate, AccountManage],
            ),
        ];
        for (actor, resource, allowed) in expect {
            for v in Verb::ALL {
                let got = authorize(actor, *v, *resource).is_ok();
                assert_eq!(got, allowed.contains(v), "{actor:?} {v:?} {resource:?}");
            }
        }
        // An administrator without a second factor holds no site-level verb.
        let no_2fa = Actor::User {
            id: UserId(2),
            superuser: true,
            project_role: None,
            scopes: Scopes::ALL,
            second_factor: false,
        };
        for v in Verb::ALL {
            assert!(
                authorize(&no_2fa, *v, Resource::Site).is_ok()
                    == matches!(*v, ProjectCreate | AccountManage),
                "{v:?}"
            );
        }
        // Site-level verbs: only operators and administrators.
        assert!(authorize(&user(None, true), UserCreate, Resource::Site).is_ok());
        assert!(
            authorize(
                &user(Some(Role::Manager), false),
                UserCreate,
                Resource::Site
            )
            .is_err()
        );
        assert_eq!(
            authorize(&user(None, false), KeysRotate, Resource::Site),
            Err(CoreError::Denied {
                verb: "keys.rotate"
            })
        );
    }
}
