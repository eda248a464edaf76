//! Domain errors: what the rules refuse, independent of HTTP or storage.

/// A rule of the domain said no.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// A value is not acceptable; `field` names the input, `reason` is for a human.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which input was refused.
        field: &'static str,
        /// Why, in words a user understands.
        reason: String,
    },
    /// The actor may not perform this action on this resource.
    #[error("not allowed: {verb}")]
    Denied {
        /// The stable name of the verb that was refused.
        verb: &'static str,
    },
}

impl CoreError {
    /// Shorthand for [`CoreError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
