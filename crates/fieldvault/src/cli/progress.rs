//! Progress bars for long commands (`pull`, `decrypt`). Drawn on standard error only when it is
//! a terminal, so scripts and logs get the summary lines alone.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items named `what`, with rate and time left.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{wide_bar}}] {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left) {{msg}}"
    )) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}
