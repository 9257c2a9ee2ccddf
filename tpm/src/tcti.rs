//! Parsing of the TCTI strings this crate accepts.
//!
//! tss-esapi 7.7's `TctiNameConf::from_str` silently ignores keys it does not know: it turns
//! `swtpm:path=/x` into `swtpm:host=localhost,port=2321`. So the strings are parsed here,
//! strictly, and `swtpm:path=` goes through [`crate::relay`].

use std::path::PathBuf;

use crate::TpmError;

/// Where the TPM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tcti {
    /// A kernel TPM device (`/dev/tpmrm0` on the box).
    Device(PathBuf),
    /// A swtpm data socket (Unix); its control socket is `PATH.ctrl`.
    SwtpmUnix(PathBuf),
    /// A swtpm on TCP (`port` is data, `port + 1` control).
    SwtpmTcp { host: String, port: u16 },
}

fn invalid(tcti: &str, reason: impl Into<String>) -> TpmError {
    TpmError::InvalidTcti {
        tcti: tcti.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn parse(tcti: &str) -> Result<Tcti, TpmError> {
    let (name, conf) = match tcti.split_once(':') {
        Some((n, c)) => (n, c),
        None => (tcti, ""),
    };
    match name {
        "device" => {
            let path = if conf.is_empty() { "/dev/tpmrm0" } else { conf };
            if !path.starts_with('/') || path.contains(',') || path.contains('=') {
                return Err(invalid(tcti, "the device must be an absolute path"));
            }
            Ok(Tcti::Device(PathBuf::from(path)))
        }
        "swtpm" => {
            let mut path = None;
            let mut host = None;
            let mut port = None;
            for kv in conf.split(',').filter(|kv| !kv.is_empty()) {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(invalid(tcti, format!("{kv:?} is not key=value")));
                };
                let slot = match k {
                    "path" => &mut path,
                    "host" => &mut host,
                    "port" => &mut port,
                    other => {
                        return Err(invalid(
                            tcti,
                            format!("unknown key {other:?} (use path=, or host= and port=)"),
                        ));
                    }
                };
                if slot.replace(v.to_string()).is_some() {
                    return Err(invalid(tcti, format!("{k}= given twice")));
                }
            }
            match (path, host, port) {
                (Some(p), None, None) => {
                    if p.is_empty() {
                        return Err(invalid(tcti, "empty path"));
                    }
                    Ok(Tcti::SwtpmUnix(PathBuf::from(p)))
                }
                (Some(_), _, _) => Err(invalid(tcti, "path= cannot be combined with host=/port=")),
                (None, host, port) => {
                    let host = host.unwrap_or_else(|| "localhost".to_string());
                    let valid_host = !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
                    if !valid_host {
                        return Err(invalid(tcti, format!("bad host {host:?}")));
                    }
                    let port = match port {
                        None => 2321,
                        Some(p) => match p.parse::<u16>() {
                            Ok(n) if n > 0 && n < u16::MAX => n,
                            _ => return Err(invalid(tcti, format!("bad port {p:?}"))),
                        },
                    };
                    Ok(Tcti::SwtpmTcp { host, port })
                }
            }
        }
        "" => Err(invalid(tcti, "empty TCTI")),
        other => Err(invalid(tcti, format!("unsupported TCTI {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(
            parse("device:/dev/tpmrm0").expect("device"),
            Tcti::Device("/dev/tpmrm0".into())
        );
        assert_eq!(
            parse("device").expect("device"),
            Tcti::Device("/dev/tpmrm0".into())
        );
        assert_eq!(
            parse("swtpm:path=/tmp/x/sock").expect("unix"),
            Tcti::SwtpmUnix("/tmp/x/sock".into())
        );
        assert_eq!(
            parse("swtpm:host=127.0.0.1,port=2321").expect("tcp"),
            Tcti::SwtpmTcp {
                host: "127.0.0.1".into(),
                port: 2321
            }
        );
        assert_eq!(
            parse("swtpm:port=4000").expect("tcp"),
            Tcti::SwtpmTcp {
                host: "localhost".into(),
                port: 4000
            }
        );
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "",
            "tabrmd",
            "mssim:host=x",
            "device:relative",
            "swtpm:path=",
            "swtpm:path=/a,port=1",
            "swtpm:socket=/a",
            "swtpm:port=x",
            "swtpm:port=0",
            "swtpm:host=a/b",
            "swtpm:path=/a,path=/b",
            "swtpm:oops",
        ] {
            assert!(
                matches!(parse(bad), Err(TpmError::InvalidTcti { .. })),
                "{bad:?} must be refused"
            );
        }
    }
}
