//! CRLs for directory answers: a candidate's CRL distribution points (`http://` URLs) are
//! fetched under the lookup deadline, cached, and handed to path validation, which checks each
//! CRL's signature against the issuer (a forged or foreign CRL proves nothing and revokes
//! nothing). When a certificate names distribution points and none could be fetched,
//! `[directory] revocation` decides: `soft-fail` uses it, `hard-fail` refuses it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealgate_smime::asn1::{Reader, tag};

/// Largest CRL read.
pub const MAX_CRL: u64 = 1024 * 1024;
/// How long a fetched CRL is kept.
const CRL_TTL: Duration = Duration::from_secs(3600);
/// Distribution points asked per certificate at most.
const MAX_URLS: usize = 4;
/// CRLs kept at most.
const MAX_CACHED: usize = 256;

/// The `http://` URLs of a certificate's CRL distribution points (fullName URIs), at most
/// [`MAX_URLS`]; none when the extension is absent or unreadable.
pub fn crl_urls(cert_der: &[u8]) -> Vec<String> {
    urls(cert_der).unwrap_or_default()
}

fn urls(der: &[u8]) -> Option<Vec<String>> {
    const CRL_DP: &[u8] = &[0x55, 0x1d, 0x1f];
    let mut out = Vec::new();
    for value in extension_values(der, CRL_DP)? {
        let points = Reader::new(value).read(tag::SEQUENCE, "points").ok()?;
        let mut pr = points.reader();
        while !pr.is_empty() {
            let dp = pr.read(tag::SEQUENCE, "point").ok()?;
            let Some(name) = dp
                .reader()
                .read_optional(tag::context_constructed(0))
                .ok()?
            else {
                continue;
            };
            let Some(full) = name
                .reader()
                .read_optional(tag::context_constructed(0))
                .ok()?
            else {
                continue;
            };
            let mut gr = full.reader();
            while !gr.is_empty() {
                let g = gr.read_any().ok()?;
                // uniformResourceIdentifier [6] IA5String
                if g.tag == tag::context(6)
                    && let Some(u) = plain_http_url(g.value)
                    && out.len() < MAX_URLS
                {
                    out.push(u);
                }
            }
        }
    }
    Some(out)
}

/// The values (inside their OCTET STRING) of every extension of a certificate with the OID
/// `id`; `None` when the certificate is unreadable.
pub(crate) fn extension_values<'a>(der: &'a [u8], id: &[u8]) -> Option<Vec<&'a [u8]>> {
    let cert = Reader::new(der).read(tag::SEQUENCE, "certificate").ok()?;
    let tbs = cert.reader().read(tag::SEQUENCE, "tbs").ok()?;
    let mut t = tbs.reader();
    let mut out = Vec::new();
    while !t.is_empty() {
        let field = t.read_any().ok()?;
        if field.tag != tag::context_constructed(3) {
            continue;
        }
        let exts = field.reader().read(tag::SEQUENCE, "extensions").ok()?;
        let mut er = exts.reader();
        while !er.is_empty() {
            let ext = er.read(tag::SEQUENCE, "extension").ok()?;
            let mut x = ext.reader();
            if x.read(tag::OID, "id").ok()?.value != id {
                continue;
            }
            let mut value = x.read_any().ok()?;
            if value.tag == tag::BOOLEAN {
                value = x.read_any().ok()?;
            }
            out.push(value.value);
        }
    }
    Some(out)
}

/// A URI that is a plain `http://` URL of sane length without spaces or control characters
/// (what the fetchers here are willing to ask).
pub(crate) fn plain_http_url(uri: &[u8]) -> Option<String> {
    let u = std::str::from_utf8(uri).ok()?;
    (u.starts_with("http://") && u.len() < 2048 && !u.chars().any(|c| c.is_control() || c == ' '))
        .then(|| u.to_string())
}

/// CRLs fetched, by URL.
#[derive(Default)]
pub struct CrlCache {
    crls: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl CrlCache {
    /// The CRLs of `urls` (cached or fetched before `deadline`); how many URLs gave none.
    pub fn get(&self, urls: &[String], deadline: Instant) -> (Vec<Vec<u8>>, usize) {
        let mut found = Vec::new();
        let mut failed = 0;
        for u in urls {
            if let Ok(c) = self.crls.lock()
                && let Some((at, crl)) = c.get(u)
                && at.elapsed() < CRL_TTL
            {
                found.push(crl.clone());
                continue;
            }
            match crate::within(
                deadline,
                Box::new({
                    let u = u.clone();
                    move |d| fetch(&u, d).map(|c| vec![c])
                }),
            ) {
                Ok(mut c) if !c.is_empty() => {
                    let crl = c.remove(0);
                    if let Ok(mut cache) = self.crls.lock() {
                        if cache.len() >= MAX_CACHED {
                            cache.clear();
                        }
                        cache.insert(u.clone(), (Instant::now(), crl.clone()));
                    }
                    found.push(crl);
                }
                _ => failed += 1,
            }
        }
        (found, failed)
    }
}

/// One CRL over plain HTTP (CRLs are signed; TLS adds nothing): `GET` to the answer's end, at
/// most [`MAX_CRL`] bytes, before `deadline`.
fn fetch(url: &str, deadline: Instant) -> Result<Vec<u8>, String> {
    exchange(url, None, deadline)
}

/// One plain HTTP/1.0 exchange: `GET url`, or `POST url` with `post` (content type, body);
/// the answer's one body (status 200), at most [`MAX_CRL`] bytes, before `deadline`.
pub(crate) fn exchange(
    url: &str,
    post: Option<(&str, &[u8])>,
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let rest = url.strip_prefix("http://").ok_or("not http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|e| e.to_string())?),
        None => (authority, 80),
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("cannot resolve")?;
    let mut s = TcpStream::connect_timeout(&addr, left()).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let request = match post {
        None => format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
            .into_bytes(),
        Some((kind, body)) => {
            let mut r = format!(
                "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        }
    };
    s.write_all(&request).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut r = (&mut s).take(MAX_CRL + 4096);
    loop {
        r.get_ref()
            .set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 8192];
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err("deadline".into());
        }
    }
    match crate::http::read_answer(&answer)? {
        v if v.len() == 1 && v[0].len() as u64 <= MAX_CRL => {
            Ok(v.into_iter().next().unwrap_or_default())
        }
        _ => Err("not one answer".into()),
    }
}
