//! `fieldvault config …`

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Print the effective configuration (secrets redacted) and where each value came from.
    Show,
    /// Print the Markdown reference of every option (docs/configuration.md).
    Reference,
}
