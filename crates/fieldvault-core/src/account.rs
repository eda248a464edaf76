//! Rules for account names (M6: sign-up asks only for a username and a password).

use crate::CoreError;

/// Longest username, as in Django's `AbstractUser` (KoboToolbox imports must fit).
pub const MAX_USERNAME_CHARS: usize = 150;
/// Longest e-mail address (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Checks a username against Django's `UnicodeUsernameValidator` character set, restricted to
/// ASCII so names are unambiguous in URLs (`/{username}/formList`) and logs.
pub fn validate_username(name: &str) -> Result<(), CoreError> {
    if name.is_empty() {
        return Err(CoreError::invalid("username", "a username is required"));
    }
    if name.chars().count() > MAX_USERNAME_CHARS {
        return Err(CoreError::invalid(
            "username",
            format!("at most {MAX_USERNAME_CHARS} characters"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_')))
    {
        return Err(CoreError::invalid(
            "username",
            format!("{c:?} is not allowed; use letters, digits and @ . + - _"),
        ));
    }
    Ok(())
}

/// Light e-mail check: one `@`, something on both sides, no spaces. Delivery is the real test.
pub fn validate_email(email: &str) -> Result<(), CoreError> {
    let ok = email.len() <= MAX_EMAIL_CHARS
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid("email", "not a valid e-mail address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["alice", "bob.smith", "a+b@x_y-z", "A1"] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "slash/", "é", &"x".repeat(151)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(validate_email("a@example.org").is_ok());
        for bad in ["", "a", "a@b", "@b.org", "a b@c.org", "a@b@c.org"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
