//! `fieldvault tls …`

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Write a self-signed certificate and key (for tests and first trials only).
    SelfSigned {
        /// Where to write the PEM certificate.
        #[arg(long, default_value = "cert.pem")]
        cert: PathBuf,
        /// Where to write the PEM private key (mode 0600; must not exist).
        #[arg(long, default_value = "key.pem")]
        key: PathBuf,
        /// Host names or IP addresses the certificate is for.
        #[arg(long = "name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        names: Vec<String>,
    },
}

pub fn run(cmd: &Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::SelfSigned { cert, key, names } => {
            fieldvault_server::tls::write_self_signed(names, cert, key)
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "Wrote {} and {} for {}.",
                cert.display(),
                key.display(),
                names.join(", ")
            );
            Ok(())
        }
    }
}
