//! `sealctl tls show|request|csr|install|import`: the certificate of the box's TLS listeners.
//!
//! Only through the running daemon's admin socket (see `admin_socket.rs`; audited there as
//! `uid:N`): the daemon holds the vault with the key and serves the certificate, and a new
//! one is served from the next connection without a restart. The checks (the request's key,
//! validity, names, the chain) are the daemon's; its refusal is printed as it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::admin_socket::{pem_or_base64, running};
use crate::keys_cmd::read_password;
use crate::{Failure, Outcome, read_file};

#[derive(Subcommand)]
pub(crate) enum TlsCmd {
    /// Show the certificate served now (subject, names, issuer, validity, SHA-256) and the
    /// request that waits for its certificate.
    Show {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a new key on the box (it stays in the vault) and print its CSR (PEM) for the
    /// organisation's CA. The certificate served now stays until the signed one is installed.
    Request {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The subject's common name.
        #[arg(long)]
        common_name: String,
        /// The subject's organisation.
        #[arg(long)]
        organization: Option<String>,
        /// A DNS name the certificate is for (repeat for several).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address the certificate is for (repeat for several).
        #[arg(long = "ip", value_name = "ADDRESS")]
        ip: Vec<String>,
        /// p256 (default) or rsa3072.
        #[arg(long)]
        key_algorithm: Option<String>,
    },
    /// Print the waiting request's CSR (PEM).
    Csr {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Install the certificate the organisation's CA signed for the waiting request.
    Install {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The certificate (PEM, the chain may follow it; or DER).
        certificate: PathBuf,
        /// The chain above it (PEM), when in another file.
        #[arg(long)]
        chain: Option<PathBuf>,
    },
    /// Install a key and certificate made elsewhere: a PKCS#12 file, or PEM certificate and key.
    Import {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// A PKCS#12 file holding one key and its certificate.
        #[arg(long, conflicts_with_all = ["certificate", "key"])]
        p12: Option<PathBuf>,
        /// File holding the PKCS#12 password (default: empty password).
        #[arg(long, requires = "p12")]
        password_file: Option<PathBuf>,
        /// The certificate (PEM, the chain after it).
        #[arg(long, requires = "key")]
        certificate: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, requires = "certificate")]
        key: Option<PathBuf>,
    },
}

fn daemon(data_dir: &Path) -> Result<crate::admin_socket::AdminSocket, Failure> {
    running(data_dir).ok_or_else(|| {
        Failure(
            format!(
                "sealgated is not running on {}: the TLS certificate is changed through the running daemon",
                data_dir.display()
            ),
            1,
        )
    })
}

fn text(data: &[u8]) -> Result<String, Failure> {
    String::from_utf8(data.to_vec()).map_err(|_| Failure("the file is not PEM text".into(), 1))
}

fn print_certificate(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let names: Vec<&str> = v["names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("subject:     {}", s("subject"));
    println!("names:       {}", names.join(", "));
    println!("issuer:      {}", s("issuer"));
    println!("valid:       {} to {}", s("not_before"), s("not_after"));
    println!("sha256:      {}", s("sha256"));
    println!("key:         {}", s("key"));
    if let Some(src) = v["source"].as_str() {
        println!("source:      {src}");
    }
}

pub(crate) fn run(cmd: TlsCmd) -> Outcome {
    match cmd {
        TlsCmd::Show { data_dir, json } => {
            let v: Value = daemon(&data_dir)?.json("GET", "/tls", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_certificate(&v);
                if let Some(r) = v["request"].as_object() {
                    println!(
                        "request:     {} waits since {} (sealctl tls csr)",
                        r.get("subject").and_then(Value::as_str).unwrap_or("-"),
                        r.get("created").and_then(Value::as_str).unwrap_or("-")
                    );
                }
            }
        }
        TlsCmd::Request {
            data_dir,
            common_name,
            organization,
            dns,
            ip,
            key_algorithm,
        } => {
            let mut body = json!({
                "common_name": common_name,
                "dns_names": dns,
                "ip_addresses": ip,
            });
            if let Some(o) = organization {
                body["organization"] = json!(o);
            }
            if let Some(k) = key_algorithm {
                body["key_algorithm"] = json!(k);
            }
            let csr = daemon(&data_dir)?.text(
                "POST",
                "/tls/request",
                Some(&body),
                Some("application/pkcs10"),
            )?;
            print!("{csr}");
        }
        TlsCmd::Csr { data_dir } => {
            let csr =
                daemon(&data_dir)?.text("GET", "/tls/csr", None, Some("application/pkcs10"))?;
            print!("{csr}");
        }
        TlsCmd::Install {
            data_dir,
            certificate,
            chain,
        } => {
            let mut body = json!({ "certificate": pem_or_base64(&read_file(&certificate)?) });
            if let Some(c) = chain {
                body["chain"] = json!(text(&read_file(&c)?)?);
            }
            let v: Value = daemon(&data_dir)?.json("PUT", "/tls/certificate", Some(&body))?;
            print_certificate(&v);
            println!("served from the next connection on");
        }
        TlsCmd::Import {
            data_dir,
            p12,
            password_file,
            certificate,
            key,
        } => {
            let body = match (p12, certificate, key) {
                (Some(p), None, None) => {
                    let password = match &password_file {
                        Some(f) => read_password(f)?,
                        None => zeroize::Zeroizing::new(String::new()),
                    };
                    json!({
                        "pkcs12": crate::admin_socket::base64(&read_file(&p)?),
                        "password": password.as_str(),
                    })
                }
                (None, Some(c), Some(k)) => json!({
                    "certificate": text(&read_file(&c)?)?,
                    "key": text(&zeroize::Zeroizing::new(read_file(&k)?))?,
                }),
                _ => {
                    return Err(Failure(
                        "give --p12 FILE, or --certificate FILE with --key FILE".into(),
                        2,
                    ));
                }
            };
            let v: Value = daemon(&data_dir)?.json("POST", "/tls/import", Some(&body))?;
            print_certificate(&v);
            println!("served from the next connection on");
        }
    }
    Ok(ExitCode::SUCCESS)
}
