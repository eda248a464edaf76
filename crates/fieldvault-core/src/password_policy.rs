//! The password policy (M1), judged on the server: at least [`MIN_CHARS`] characters, not the
//! username or e-mail, and a zxcvbn score of at least [`MIN_SCORE`] with the username and e-mail
//! as known inputs. The same evaluation feeds the live strength meter, so what the meter shows is
//! exactly what the server will accept.

use crate::CoreError;

/// Shortest password accepted.
pub const MIN_CHARS: usize = 10;
/// Lowest zxcvbn score accepted (3: "safely unguessable", more than 10^8 guesses).
pub const MIN_SCORE: u8 = 3;
/// Longest password accepted, in bytes.
pub const MAX_BYTES: usize = 1024;
/// zxcvbn's matching grows quickly with length; beyond this many characters only the prefix is
/// scored (such a password is long enough that length alone makes it strong).
const MAX_SCORED_CHARS: usize = 100;

/// What the meter shows and the server decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strength {
    /// zxcvbn score, 0 (weakest) to 4.
    pub score: u8,
    /// Whether the policy accepts it.
    pub acceptable: bool,
    /// zxcvbn's warning, if any.
    pub warning: Option<String>,
    /// zxcvbn's suggestions.
    pub suggestions: Vec<String>,
    /// Rules of the policy not met, in words.
    pub unmet: Vec<String>,
}

/// Evaluates a candidate password for an account.
pub fn evaluate(password: &str, username: &str, email: Option<&str>) -> Strength {
    let mut unmet = Vec::new();
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        unmet.push(format!("Use at least {MIN_CHARS} characters."));
    }
    if password.len() > MAX_BYTES {
        unmet.push(format!("Use at most {MAX_BYTES} bytes."));
    }
    let lower = password.to_lowercase();
    let same_as = |s: &str| !s.is_empty() && lower == s.to_lowercase();
    if same_as(username) || email.is_some_and(same_as) {
        unmet.push("Do not use your username or e-mail address as the password.".into());
    }
    let scored: String = password.chars().take(MAX_SCORED_CHARS).collect();
    let mut inputs = vec![username];
    if let Some(e) = email {
        inputs.push(e);
        if let Some((local, _)) = e.split_once('@') {
            inputs.push(local);
        }
    }
    let (score, warning, suggestions) = if scored.is_empty() {
        (0, None, Vec::new())
    } else {
        let entropy = zxcvbn::zxcvbn(&scored, &inputs);
        let feedback = entropy.feedback();
        (
            u8::from(entropy.score()),
            feedback.and_then(|f| f.warning()).map(|w| w.to_string()),
            feedback
                .map(|f| f.suggestions().iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        )
    };
    if score < MIN_SCORE && chars >= MIN_CHARS {
        unmet.push("Choose a less guessable password: longer, with uncommon words.".into());
    }
    Strength {
        score,
        acceptable: unmet.is_empty() && score >= MIN_SCORE,
        warning,
        suggestions,
        unmet,
    }
}

/// Checks a new password; the refusal carries zxcvbn's warning and suggestions.
pub fn check(password: &str, username: &str, email: Option<&str>) -> Result<(), CoreError> {
    let s = evaluate(password, username, email);
    if s.acceptable {
        return Ok(());
    }
    let mut reason = s.unmet.join(" ");
    if let Some(w) = s.warning {
        reason.push_str(&format!(" {w}"));
    }
    for hint in s.suggestions {
        reason.push_str(&format!(" {hint}"));
    }
    Err(CoreError::invalid("password", reason.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_strong() {
        for weak in [
            "password123",
            "qwertyuiop",
            "aaaaaaaaaaaa",
            "short",
            "alice-the-user",
            "",
        ] {
            let s = evaluate(weak, "alice-the-user", None);
            assert!(!s.acceptable, "{weak}: {s:?}");
            assert!(check(weak, "alice-the-user", None).is_err());
        }
        let s = evaluate("password123", "alice", None);
        assert!(s.score < MIN_SCORE);
        assert!(s.warning.is_some() || !s.suggestions.is_empty());
        for strong in [
            "correct horse battery staple",
            "Tamarind-Okapi-Glacier-41",
            "vN7#qL2!xW9@pR4z",
        ] {
            let s = evaluate(strong, "alice", Some("alice@example.org"));
            assert!(s.acceptable, "{strong}: {s:?}");
        }
        // The username and e-mail count as known inputs.
        assert!(!evaluate("alice@example.org", "alice", Some("alice@example.org")).acceptable);
        assert!(!evaluate("Zanzibar1234Zanzibar", "zanzibar1234zanzibar", None).acceptable);
        // Very long inputs are bounded.
        let long = "x".repeat(2000);
        assert!(!evaluate(&long, "a", None).acceptable);
        let msg = check("password123", "alice", None).unwrap_err().to_string();
        assert!(msg.contains("password"), "{msg}");
    }
}
