//! `sealctl`: Sealgate's administrator command line.
//!
//! Exit codes: 0 success; 1 the operation failed (bad input, wrong key, invalid signature);
//! 2 the command line was wrong. Every failure prints one line on stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sealgate_smime::cert::Certificate;
use sealgate_smime::crypto::{CipherChoice, HashAlg};
use sealgate_smime::envelope::{KeyManagement, Recipient};
use sealgate_smime::keys::{PrivateKey, SoftwareKey};
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::VerifyOptions;

mod admin_socket;
mod api_token_cmd;
mod ca_cmd;
mod certs_cmd;
mod directory_cmd;
mod dkim_cmd;
mod keys_cmd;
mod quarantine_cmd;
mod queue_cmd;
mod scan_cmd;
mod tls_cmd;
mod vault_cmd;

/// Sealgate administration.
#[derive(Parser)]
#[command(
    name = "sealctl",
    version,
    about = "Sealgate administration",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// S/MIME operations on messages and CMS files.
    #[command(subcommand)]
    Smime(Smime),
    /// The key vault: create it, show its status, recover it onto a new TPM.
    #[command(subcommand)]
    Vault(vault_cmd::VaultCmd),
    /// Users' keys in the vault: import, list, export.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCmd),
    /// The box's own certificate authority.
    #[command(subcommand)]
    Ca(ca_cmd::CaCmd),
    /// Bearer tokens for the docking API (sealgated): create, list, revoke.
    #[command(subcommand)]
    ApiToken(api_token_cmd::ApiTokenCmd),
    /// External recipients' certificates waiting for an administrator: pending, approve, reject.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCmd),
    /// The certificate directory: look a recipient's certificate up.
    #[command(subcommand)]
    Directory(directory_cmd::DirectoryCmd),
    /// The SMTP queue: list, show, retry, hold, release, delete.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCmd),
    /// The box's TLS certificate: show, request (key and CSR on the box), csr, install, import.
    #[command(subcommand)]
    Tls(tls_cmd::TlsCmd),
    /// Scan one message as the daemon would (spam, viruses by hash, archives, DLP); prints a
    /// JSON verdict and exits 0 whatever it is.
    Scan(scan_cmd::ScanCmd),
    /// The quarantine of content scanning: list, show, release, delete.
    #[command(subcommand)]
    Quarantine(quarantine_cmd::QuarantineCmd),
    /// DKIM signing keys for `[[dkim]]`: keygen (the key and its DNS TXT record).
    #[command(subcommand)]
    Dkim(dkim_cmd::DkimCmd),
}

#[derive(Subcommand)]
enum Smime {
    /// Encrypt a message for one or more recipients' certificates.
    Encrypt {
        /// A recipient's certificate (PEM or DER). Repeat for several recipients.
        #[arg(long = "to", value_name = "CERT", required = true)]
        to: Vec<PathBuf>,
        /// Content cipher: aes256-cbc (default), aes128-cbc, aes256-gcm, aes128-gcm.
        #[arg(long, default_value = "aes256-cbc")]
        cipher: String,
        /// Use RSA-OAEP with this hash (sha1 or sha256) for RSA recipients instead of PKCS#1 v1.5.
        #[arg(long, value_name = "HASH")]
        oaep: Option<String>,
        /// Identify recipients by subject key identifier instead of issuer and serial.
        #[arg(long)]
        key_id: bool,
        #[command(flatten)]
        io: Io,
    },
    /// Decrypt a message or bare CMS (DER, BER, PEM or base64).
    Decrypt {
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        io: Io,
    },
    /// Sign a message: multipart/signed (default) or opaque signed-data.
    Sign {
        #[command(flatten)]
        key: KeyArgs,
        /// Opaque signed-data instead of multipart/signed.
        #[arg(long)]
        opaque: bool,
        /// Sign with RSA-PSS (SHA-256) instead of RSA PKCS#1 v1.5 (RSA keys only).
        #[arg(long)]
        pss: bool,
        #[command(flatten)]
        io: Io,
    },
    /// Verify a signed message or bare SignedData; prints a JSON verdict on stdout.
    Verify {
        /// Trust anchor certificates (PEM bundle or DER). Without it, only signatures are checked.
        #[arg(long = "ca", value_name = "CAFILE")]
        ca: Vec<PathBuf>,
        /// Certificate revocation lists (PEM or DER).
        #[arg(long = "crl", value_name = "CRLFILE")]
        crl: Vec<PathBuf>,
        /// The detached content, for a bare detached SignedData.
        #[arg(long, value_name = "FILE")]
        content: Option<PathBuf>,
        /// Validate the chain at this time (RFC 3339) instead of now. The signer's own
        /// signingTime is never used: give a time here only when you trust it.
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Bind the signer to this address instead of the message's From address.
        #[arg(long, value_name = "ADDRESS")]
        from: Option<String>,
        /// Accept SHA-1 and RSA keys under 2048 bits (still reported as weak). Without it,
        /// such signatures fail.
        #[arg(long)]
        allow_weak: bool,
        #[command(flatten)]
        io: Io,
    },
    /// Describe a message or CMS file as JSON: type, recipients, signers, certificates.
    Inspect {
        /// Input file (default: stdin).
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
    },
}

#[derive(Args)]
struct Io {
    /// Input file (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long = "out", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct KeyArgs {
    /// Private key file (PEM or DER: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "KEYFILE",
        requires = "cert",
        conflicts_with = "p12"
    )]
    key: Option<PathBuf>,
    /// Certificate of the key (PEM or DER; further PEM certificates become the chain).
    #[arg(long, value_name = "CERTFILE", requires = "key")]
    cert: Option<PathBuf>,
    /// PKCS#12 file with key and certificate.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["key", "data_dir"])]
    p12: Option<PathBuf>,
    /// File holding the PKCS#12 password (default: empty password).
    #[arg(long, value_name = "F", requires = "p12")]
    password_file: Option<PathBuf>,
    /// Take the keys from the vault in this data directory (with --user).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["key", "p12"], requires = "user")]
    data_dir: Option<PathBuf>,
    /// The vault user whose keys to use.
    #[arg(long, value_name = "EMAIL", requires = "data_dir")]
    user: Option<String>,
    #[command(flatten)]
    sealer: vault_cmd::SealerArgs,
}

/// A failure: its message and exit code.
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

type Outcome = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    // Before anything else (no other thread yet): libtss2 must not add its own stderr lines.
    sealgate_tpm::quiet_library_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(Failure(msg, code)) => {
            let line = msg.replace('\n', " ");
            eprintln!("sealctl: error: {line}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Smime(s) => smime(s),
        Command::Vault(c) => vault_cmd::run(c),
        Command::Keys(c) => keys_cmd::run(c),
        Command::Ca(c) => ca_cmd::run(c),
        Command::ApiToken(c) => api_token_cmd::run(c),
        Command::Certs(c) => certs_cmd::run(c),
        Command::Directory(c) => directory_cmd::run(c),
        Command::Queue(c) => queue_cmd::run(c),
        Command::Tls(c) => tls_cmd::run(c),
        Command::Scan(c) => scan_cmd::run(c),
        Command::Quarantine(c) => quarantine_cmd::run(c),
        Command::Dkim(c) => dkim_cmd::run(c),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure(format!("cannot read {}: {e}", path.display()), 1))
}

fn read_input(path: Option<&Path>) -> Result<Vec<u8>, Failure> {
    match path {
        Some(p) => read_file(p),
        None => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| Failure(format!("cannot read stdin: {e}"), 1))?;
            Ok(v)
        }
    }
}

fn write_output(path: Option<&Path>, data: &[u8]) -> Result<(), Failure> {
    match path {
        Some(p) => std::fs::write(p, data)
            .map_err(|e| Failure(format!("cannot write {}: {e}", p.display()), 1)),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)
                .and_then(|_| out.flush())
                .map_err(|e| Failure(format!("cannot write stdout: {e}"), 1))
        }
    }
}

fn load_keys(k: &KeyArgs) -> Result<Vec<SoftwareKey>, Failure> {
    if let Some(p12) = &k.p12 {
        let data = read_file(p12)?;
        let password = match &k.password_file {
            Some(f) => {
                let raw = read_file(f)?;
                let s = String::from_utf8(raw)
                    .map_err(|_| Failure("the password file is not UTF-8".into(), 1))?;
                s.strip_suffix("\r\n")
                    .or_else(|| s.strip_suffix('\n'))
                    .unwrap_or(&s)
                    .to_string()
            }
            None => String::new(),
        };
        return Ok(SoftwareKey::from_pkcs12(&data, &password)?);
    }
    match (&k.key, &k.cert) {
        (Some(key), Some(cert)) => Ok(vec![SoftwareKey::from_key_and_cert(
            &read_file(key)?,
            &read_file(cert)?,
        )?]),
        _ => Err(Failure("give --key and --cert, or --p12".into(), 2)),
    }
}

/// The keys of `--data-dir/--user` (the vault) or of `--key/--cert/--p12` (files).
fn load_any_keys(k: &KeyArgs, signing: bool) -> Result<Vec<Box<dyn PrivateKey>>, Failure> {
    if let (Some(dir), Some(user)) = (&k.data_dir, &k.user) {
        return vault_cmd::smime_keys(dir, user, &k.sealer, signing);
    }
    Ok(load_keys(k)?
        .into_iter()
        .map(|k| Box::new(k) as Box<dyn PrivateKey>)
        .collect())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn smime(cmd: Smime) -> Outcome {
    match cmd {
        Smime::Encrypt {
            to,
            cipher,
            oaep,
            key_id,
            io,
        } => {
            let cipher: CipherChoice = cipher
                .parse()
                .map_err(|e: sealgate_smime::Error| Failure(e.to_string(), 2))?;
            let oaep = match oaep.as_deref() {
                None => None,
                Some("sha1" | "sha-1") => Some(HashAlg::Sha1),
                Some("sha256" | "sha-256") => Some(HashAlg::Sha256),
                Some(other) => {
                    return Err(Failure(
                        format!("unknown --oaep hash {other:?} (use sha1 or sha256)"),
                        2,
                    ));
                }
            };
            let mut recipients = Vec::new();
            for path in &to {
                let certs = Certificate::parse_many(&read_file(path)?)
                    .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?;
                for cert in certs.into_iter().take(1) {
                    let mut r = Recipient::new(cert)?;
                    if let (Some(h), KeyManagement::RsaPkcs1) = (oaep, r.key_management) {
                        r.key_management = KeyManagement::RsaOaep(h);
                    }
                    r.by_key_id = key_id;
                    recipients.push(r);
                }
            }
            let input = read_input(io.input.as_deref())?;
            let out = message::encrypt_message(&input, &recipients, cipher)?;
            write_output(io.output.as_deref(), &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Smime::Decrypt { key, io } => {
            let keys = load_any_keys(&key, false)?;
            let refs: Vec<&dyn PrivateKey> = keys.iter().map(|k| k.as_ref()).collect();
            let input = read_input(io.input.as_deref())?;
            let opened =
                message::open(&input, &refs, &VerifyOptions::default(), OpenMode::Decrypt)?;
            if !opened.decrypted() {
                return Err(Failure("the input is not encrypted".into(), 1));
            }
            write_output(io.output.as_deref(), &opened.output)?;
            Ok(ExitCode::SUCCESS)
        }
        Smime::Sign {
            key,
            opaque,
            pss,
            io,
        } => {
            let keys = load_any_keys(&key, true)?;
            let key = keys.first().ok_or_else(|| Failure("no key".into(), 1))?;
            let input = read_input(io.input.as_deref())?;
            let scheme = pss.then_some(sealgate_smime::keys::SignScheme::RsaPss(HashAlg::Sha256));
            let out = message::sign_message_with(&input, key.as_ref(), opaque, now(), scheme)?;
            write_output(io.output.as_deref(), &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Smime::Verify {
            ca,
            crl,
            content,
            at,
            from,
            allow_weak,
            io,
        } => {
            let mut opts = VerifyOptions {
                allow_weak,
                ..VerifyOptions::default()
            };
            for path in &ca {
                opts.anchors.extend(
                    Certificate::parse_many(&read_file(path)?)
                        .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?,
                );
            }
            for path in &crl {
                opts.crls.extend(
                    read_crls(&read_file(path)?)
                        .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?,
                );
            }
            if let Some(at) = &at {
                let t =
                    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| Failure(format!("--at {at:?} is not RFC 3339: {e}"), 2))?;
                opts.at = Some(t.unix_timestamp());
            }
            opts.from = from;
            let detached = match &content {
                Some(p) => Some(read_file(p)?),
                None => None,
            };
            let input = read_input(io.input.as_deref())?;
            let (content, verdict) = message::verify_message(&input, detached.as_deref(), &opts)?;
            if let Some(out) = io.output.as_deref() {
                write_output(Some(out), &content)?;
            }
            let mut json = serde_json::to_value(&verdict)?;
            if let (true, Some(o)) = (ca.is_empty(), json.as_object_mut()) {
                o.insert(
                    "note".into(),
                    "no --ca given: signatures checked, certificate chains not checked".into(),
                );
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
            // Without --ca the exit status reflects the signatures (and the From binding)
            // only; the JSON says `"chain": "unchecked"` and `"valid": false`.
            let ok = verdict.valid
                || (ca.is_empty()
                    && verdict.signatures_valid
                    && verdict
                        .signers
                        .iter()
                        .all(|s| s.from_matches != Some(false)));
            if ok {
                Ok(ExitCode::SUCCESS)
            } else {
                let reason = verdict
                    .signers
                    .iter()
                    .flat_map(|s| {
                        s.reasons
                            .iter()
                            .chain(s.chain.iter().flat_map(|c| c.reasons.iter()))
                    })
                    .next()
                    .cloned()
                    .unwrap_or_else(|| "no valid signature".into());
                Err(Failure(format!("verification failed: {reason}"), 1))
            }
        }
        Smime::Inspect { input } => {
            let data = read_input(input.as_deref())?;
            let report = message::inspect(&data)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// CRLs from PEM (`X509 CRL` blocks) or one DER CRL.
fn read_crls(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if data.windows(15).any(|w| w == b"-----BEGIN X509") {
        let text = String::from_utf8_lossy(data);
        let mut out = Vec::new();
        for block in text.split("-----BEGIN X509 CRL-----").skip(1) {
            let body = block
                .split("-----END X509 CRL-----")
                .next()
                .unwrap_or_default();
            let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            out.push(
                sealgate_smime::mime::decode_base64(b64.as_bytes()).map_err(|e| e.to_string())?,
            );
        }
        if out.is_empty() {
            return Err("no X509 CRL block".into());
        }
        Ok(out)
    } else {
        Ok(vec![data.to_vec()])
    }
}
