//! `sealctl dkim keygen`: a DKIM signing key for `[[dkim]]` (RSA 2048, PKCS#8 PEM, written
//! mode 0600, never over an existing file) and the DNS TXT record to publish for it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use rcgen::{KeyPair, PKCS_RSA_SHA256, PublicKeyData, RsaKeySize};

use crate::{Failure, Outcome};

#[derive(Subcommand)]
pub(crate) enum DkimCmd {
    /// Make a key (written mode 0600) and print the TXT record for
    /// `SELECTOR._domainkey.DOMAIN`.
    Keygen {
        /// The signing domain.
        #[arg(long)]
        domain: String,
        /// The selector.
        #[arg(long)]
        selector: String,
        /// Where the key goes (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(crate) fn run(cmd: DkimCmd) -> Outcome {
    let DkimCmd::Keygen {
        domain,
        selector,
        out,
    } = cmd;
    if !plain(&domain) || !plain(&selector) {
        return Err(Failure("domain and selector must be DNS names".into(), 2));
    }
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
        .map_err(|e| Failure(format!("cannot make a key: {e}"), 1))?;
    let pem = zeroize::Zeroizing::new(key.serialize_pem());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(|e| Failure(format!("cannot create {}: {e}", out.display()), 1))?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Failure(format!("cannot write {}: {e}", out.display()), 1))?;
    use ::base64::Engine as _;
    let p = format!(
        "p={}",
        ::base64::engine::general_purpose::STANDARD.encode(key.subject_public_key_info())
    );
    // TXT strings are at most 255 bytes: split.
    let strings: Vec<String> = p
        .as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    println!(
        "{selector}._domainkey.{domain}. IN TXT ( \"v=DKIM1; k=rsa; \" {} )",
        strings.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}
