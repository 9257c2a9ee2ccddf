//! `GET /settings`: the running settings model as JSON, every field, in the settings file's
//! own names and spellings (so `PATCH /settings` patches this view and parses the result as
//! the file is parsed: `settings_change.rs`).
//!
//! The structs are destructured without `..`, so a field added to `settings.rs` does not
//! compile until it is shown here (or deliberately hidden: a secret would be shown only as
//! whether it is set). No field today is a secret: `[tls] key` is a path, not the key.

use serde_json::{Map, Value, json};

use crate::settings::{
    Admin, Auth, ByteCount, Cidr, Cipher, Docking, EncryptFailure, EncryptPolicy, Fingerprint,
    Imap, Inbound, Limits, Log, MissingPolicy, PinnedClient, Policy, PolicyOverride, Queue,
    Seconds, Settings, SignLevel, SignPolicy, Smtp, SubjectTrigger, Submission, Tls, TlsMode,
};

/// The name a value is spelled with in the settings file (the first of `names` that parses to
/// it), else its Debug form.
fn spelled<T: PartialEq + TryFrom<String> + std::fmt::Debug>(v: T, names: &[&str]) -> Value {
    names
        .iter()
        .find(|n| T::try_from(n.to_string()).is_ok_and(|p| p == v))
        .map_or_else(|| json!(format!("{v:?}")), |n| json!(n))
}

fn bytes(b: ByteCount) -> Value {
    json!(b.0)
}

fn secs(s: Seconds) -> Value {
    json!(s.0)
}

fn path(p: &Option<std::path::PathBuf>) -> Value {
    p.as_ref()
        .map_or(Value::Null, |p| json!(p.display().to_string()))
}

fn cidrs(c: &[Cidr]) -> Value {
    json!(c.iter().map(|c| c.to_string()).collect::<Vec<_>>())
}

fn client(c: &PinnedClient) -> Value {
    let PinnedClient {
        name,
        sha256,
        scopes,
    } = c;
    let Fingerprint(fp) = sha256;
    json!({
        "name": name,
        "sha256": crate::identity::hex(fp),
        "scopes": scopes.iter().map(|s| s.name()).collect::<Vec<_>>(),
    })
}

/// Every field of `s`.
pub fn view(s: &Settings) -> Value {
    let Settings {
        docking,
        admin,
        tls,
        auth,
        smtp,
        log,
        limits,
        directory,
        queue,
        submission,
        inbound,
        policy,
        imap,
        dns,
        network,
        scan,
        dkim,
        proxy,
    } = s;
    let Docking {
        listen,
        max_message_bytes,
        max_buffered_bytes,
        request_timeout_secs,
        crypto_workers,
        crypto_queue,
        missing,
        sender_copy,
        sign,
        cipher,
        trust_anchors,
        allow_weak_signatures,
    } = docking;
    let Cipher(cipher) = cipher;
    let cipher_name = ["aes256-cbc", "aes128-cbc", "aes256-gcm", "aes128-gcm"]
        .iter()
        .find(|n| {
            n.parse::<sealgate_smime::crypto::CipherChoice>()
                .is_ok_and(|c| c == *cipher)
        })
        .map_or_else(|| json!(format!("{cipher:?}")), |n| json!(n));
    let docking = json!({
        "listen": listen.to_string(),
        "max_message_bytes": bytes(*max_message_bytes),
        "max_buffered_bytes": bytes(*max_buffered_bytes),
        "request_timeout_secs": secs(*request_timeout_secs),
        "crypto_workers": crypto_workers,
        "crypto_queue": crypto_queue,
        "missing": spelled::<MissingPolicy>(*missing, &["reject", "send-plain", "encrypt-known"]),
        "sender_copy": sender_copy,
        "sign": spelled::<SignPolicy>(*sign, &["never", "if-key", "always"]),
        "cipher": cipher_name,
        "trust_anchors": path(trust_anchors),
        "allow_weak_signatures": allow_weak_signatures,
    });
    let Admin { listen, socket } = admin;
    let admin = json!({ "listen": listen.to_string(), "socket": path(socket) });
    let Tls { certificate, key } = tls;
    let tls = json!({ "certificate": path(certificate), "key": path(key) });
    let Auth {
        max_failures,
        failure_window_secs,
        clients,
    } = auth;
    let auth = json!({
        "max_failures": max_failures,
        "failure_window_secs": secs(*failure_window_secs),
        "clients": clients.iter().map(client).collect::<Vec<_>>(),
    });
    let Smtp {
        decrypt_listen,
        encrypt_listen,
        next_hop,
        hostname,
        retry_secs,
        allow_addresses,
        certificate_addresses,
        max_sessions,
        max_sessions_per_address,
        session_timeout_secs,
        spool_max_bytes,
        max_processing_attempts,
        encrypt_failure,
        next_hop_tls,
        next_hop_ca,
        next_hop_fingerprint,
        next_hop_name,
    } = smtp;
    let addr = |a: &Option<std::net::SocketAddr>| a.map_or(Value::Null, |a| json!(a.to_string()));
    let smtp = json!({
        "decrypt_listen": addr(decrypt_listen),
        "encrypt_listen": addr(encrypt_listen),
        "next_hop": addr(next_hop),
        "hostname": hostname,
        "retry_secs": secs(*retry_secs),
        "allow_addresses": cidrs(allow_addresses),
        "certificate_addresses": cidrs(certificate_addresses),
        "max_sessions": max_sessions,
        "max_sessions_per_address": max_sessions_per_address,
        "session_timeout_secs": secs(*session_timeout_secs),
        "spool_max_bytes": bytes(*spool_max_bytes),
        "max_processing_attempts": max_processing_attempts,
        "encrypt_failure": spelled::<EncryptFailure>(*encrypt_failure, &["hold", "send-plain"]),
        "next_hop_tls": spelled::<TlsMode>(*next_hop_tls, &["none", "opportunistic", "require"]),
        "next_hop_ca": path(next_hop_ca),
        "next_hop_fingerprint": next_hop_fingerprint.map_or(Value::Null, |Fingerprint(f)| json!(crate::identity::hex(&f))),
        "next_hop_name": next_hop_name,
    });
    let Queue {
        retry_min_secs,
        retry_max_secs,
        lifetime_secs,
        max_received,
        max_loop_markers,
    } = queue;
    let queue = json!({
        "retry_min_secs": retry_min_secs.map_or(Value::Null, secs),
        "retry_max_secs": secs(*retry_max_secs),
        "lifetime_secs": lifetime_secs,
        "max_received": max_received,
        "max_loop_markers": max_loop_markers,
    });
    let Limits {
        max_recipient_entries,
        max_signers,
    } = limits;
    let Log { level } = log;
    let Imap {
        listen,
        upstream,
        upstream_ca,
        cache_max_mb,
        encrypt_append,
        listen_starttls,
        max_sessions_per_user,
        logins,
        oauth_introspection,
        oauth_introspection_ca,
        oauth_client_id,
        oauth_client_secret_file,
        oauth_username_claim,
        junk_feedback,
        junk_folders,
        junk_feedback_daily,
    } = imap;
    let imap = json!({
        "listen": listen.map_or(Value::Null, |a| json!(a.to_string())),
        "upstream": upstream.as_ref().map_or(Value::Null, |u| json!(u.to_string())),
        "upstream_ca": path(upstream_ca),
        "cache_max_mb": cache_max_mb.unwrap_or(crate::imap::DEFAULT_CACHE_MB),
        "encrypt_append": encrypt_append.unwrap_or(true),
        "listen_starttls": listen_starttls.map_or(Value::Null, |a| json!(a.to_string())),
        "max_sessions_per_user": max_sessions_per_user.unwrap_or(crate::imap::DEFAULT_SESSIONS_PER_USER),
        "logins": logins,
        "oauth_introspection": oauth_introspection,
        "oauth_introspection_ca": path(oauth_introspection_ca),
        "oauth_client_id": oauth_client_id,
        "oauth_client_secret_file": path(oauth_client_secret_file),
        "oauth_username_claim": oauth_username_claim.as_deref().unwrap_or("username"),
        "junk_feedback": junk_feedback.unwrap_or(scan.enabled),
        "junk_folders": crate::imap::feedback::folder_names(junk_folders),
        "junk_feedback_daily": junk_feedback_daily.unwrap_or(crate::imap::feedback::DEFAULT_DAILY),
    });
    json!({
        "docking": docking,
        "admin": admin,
        "tls": tls,
        "auth": auth,
        "smtp": smtp,
        "log": { "level": level },
        "limits": {
            "max_recipient_entries": max_recipient_entries,
            "max_signers": max_signers,
        },
        "directory": directory_view(directory),
        "queue": queue,
        "submission": submission_view(submission),
        "inbound": inbound_view(inbound),
        "policy": policy_view(policy),
        "imap": imap,
        "dns": json!(dns),
        "network": json!(network),
        "scan": scan_view(scan),
        "proxy": {"url": proxy.url},
        "dkim": dkim
            .iter()
            .map(|crate::dkim_sign::DkimKey { domain, selector, key }| {
                json!({ "domain": domain, "selector": selector, "key": path(&Some(key.clone())) })
            })
            .collect::<Vec<_>>(),
    })
}

fn scan_view(s: &sealgate_scan::Settings) -> Value {
    let sealgate_scan::Settings {
        enabled,
        hashdb,
        tag,
        quarantine,
        reject,
        undecryptable,
        card_numbers,
        ibans,
        dlp,
        quarantine_days,
        auditor,
        subject_tag,
        reputation_url,
        reputation_ca,
        reputation_timeout_ms,
        reputation_batch,
        clamd,
        clamd_timeout_ms,
        digest_hours,
        release_link_hours,
        release_url,
        auth,
        dmarc_policy,
        dnsbl,
        uribl,
        resolver,
        dns_timeout_ms,
        model,
    } = s;
    json!({
        "enabled": enabled,
        "hashdb": hashdb,
        "tag": tag,
        "quarantine": quarantine,
        "reject": reject,
        "undecryptable": undecryptable,
        "card_numbers": card_numbers,
        "ibans": ibans,
        "dlp": dlp,
        "quarantine_days": quarantine_days,
        "auditor": auditor,
        "subject_tag": subject_tag,
        "reputation_url": reputation_url,
        "reputation_ca": reputation_ca,
        "reputation_timeout_ms": reputation_timeout_ms,
        "reputation_batch": reputation_batch,
        "clamd": clamd,
        "clamd_timeout_ms": clamd_timeout_ms,
        "digest_hours": digest_hours,
        "release_link_hours": release_link_hours,
        "release_url": release_url,
        "auth": auth,
        "dmarc_policy": dmarc_policy,
        "dnsbl": dnsbl,
        "uribl": uribl,
        "resolver": resolver,
        "dns_timeout_ms": dns_timeout_ms,
        "model": model,
    })
}

fn submission_view(s: &Submission) -> Value {
    let Submission {
        listen,
        listen_tls,
        auth,
        auth_ca,
        relay,
        relay_username,
        relay_password_file,
        relay_name,
        auth_cache_secs,
        max_auth_failures,
        auth_failure_window_secs,
        aliases,
        relay_tls,
        relay_fingerprint,
    } = s;
    let addr = |a: &Option<std::net::SocketAddr>| a.map_or(Value::Null, |a| json!(a.to_string()));
    json!({
        "listen": addr(listen),
        "listen_tls": addr(listen_tls),
        "auth": auth.as_ref().map_or(Value::Null, |a| json!(a.to_string())),
        "auth_ca": path(auth_ca),
        "relay": addr(relay),
        "relay_username": relay_username,
        "relay_password_file": path(relay_password_file),
        "relay_name": relay_name,
        "auth_cache_secs": secs(*auth_cache_secs),
        "max_auth_failures": max_auth_failures,
        "auth_failure_window_secs": secs(*auth_failure_window_secs),
        "aliases": aliases
            .iter()
            .map(|(login, addrs)| {
                (login.clone(), json!(addrs.iter().map(|a| a.0.clone()).collect::<Vec<_>>()))
            })
            .collect::<Map<String, Value>>(),
        "relay_tls": relay_tls.map_or(Value::Null, |t| spelled::<TlsMode>(t, &["none", "opportunistic", "require"])),
        "relay_fingerprint": relay_fingerprint.map_or(Value::Null, |Fingerprint(f)| json!(crate::identity::hex(&f))),
    })
}

fn inbound_view(i: &Inbound) -> Value {
    let Inbound {
        listen,
        domains,
        next_hop,
        encrypt_at_rest,
        max_connections_per_minute,
        max_recipients,
        next_hop_tls,
        next_hop_ca,
        next_hop_fingerprint,
        next_hop_name,
        verify_recipients,
        verify_positive_ttl_secs,
        verify_negative_ttl_secs,
        verify_cache_entries,
        verify_probes_per_minute,
    } = i;
    json!({
        "listen": listen.map_or(Value::Null, |a| json!(a.to_string())),
        "domains": domains.iter().map(|d| d.0.clone()).collect::<Vec<_>>(),
        "next_hop": next_hop.map_or(Value::Null, |a| json!(a.to_string())),
        "encrypt_at_rest": encrypt_at_rest,
        "max_connections_per_minute": max_connections_per_minute,
        "max_recipients": max_recipients,
        "next_hop_tls": spelled::<TlsMode>(*next_hop_tls, &["none", "opportunistic", "require"]),
        "next_hop_ca": path(next_hop_ca),
        "next_hop_fingerprint": next_hop_fingerprint.map_or(Value::Null, |Fingerprint(f)| json!(crate::identity::hex(&f))),
        "next_hop_name": next_hop_name,
        "verify_recipients": verify_recipients,
        "verify_positive_ttl_secs": secs(*verify_positive_ttl_secs),
        "verify_negative_ttl_secs": secs(*verify_negative_ttl_secs),
        "verify_cache_entries": verify_cache_entries,
        "verify_probes_per_minute": verify_probes_per_minute,
    })
}

fn policy_override(o: &PolicyOverride) -> Value {
    let PolicyOverride {
        encrypt,
        sign,
        auto_enrol,
        header_protection,
    } = o;
    json!({
        "encrypt": encrypt.map(EncryptPolicy::name),
        "sign": sign.map(SignLevel::name),
        "auto_enrol": auto_enrol,
        "header_protection": header_protection,
    })
}

fn policy_view(p: &Policy) -> Value {
    let Policy {
        encrypt,
        sign,
        subject_trigger,
        auto_enrol,
        header_protection,
        domains,
        users,
    } = p;
    let SubjectTrigger(trigger) = subject_trigger;
    json!({
        "encrypt": encrypt.name(),
        "sign": sign.name(),
        "subject_trigger": trigger,
        "auto_enrol": auto_enrol,
        "header_protection": header_protection,
        "domains": domains
            .iter()
            .map(|(d, o)| (d.0.clone(), policy_override(o)))
            .collect::<Map<String, Value>>(),
        "users": users
            .iter()
            .map(|(u, o)| (u.0.clone(), policy_override(o)))
            .collect::<Map<String, Value>>(),
    })
}

/// `[directory]`: every field (the LDAP bind password is a file name, never the password).
fn directory_view(d: &sealgate_directory::Settings) -> Value {
    let sealgate_directory::Settings {
        order,
        deadline_ms,
        cache_ttl_secs,
        negative_ttl_secs,
        revocation,
        trust_anchors,
        blocked,
        ldap,
        http,
        smimea_resolver,
        publish_listen,
        publish_per_minute,
    } = d;
    let ldap: Vec<Value> = ldap
        .iter()
        .map(|l| {
            let sealgate_directory::LdapSettings {
                url,
                base,
                filter,
                starttls,
                ca,
                bind_dn,
                bind_password_file,
            } = l;
            json!({
                "url": url, "base": base, "filter": filter, "starttls": starttls,
                "ca": path(ca), "bind_dn": bind_dn,
                "bind_password_file": path(bind_password_file),
            })
        })
        .collect();
    let http: Vec<Value> = http
        .iter()
        .map(|h| {
            let sealgate_directory::HttpSettings { url, ca } = h;
            json!({ "url": url, "ca": path(ca) })
        })
        .collect();
    json!({
        "order": order.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "deadline_ms": deadline_ms,
        "cache_ttl_secs": cache_ttl_secs,
        "negative_ttl_secs": negative_ttl_secs,
        "revocation": revocation.as_str(),
        "trust_anchors": path(trust_anchors),
        "blocked": blocked,
        "ldap": ldap,
        "smimea_resolver": smimea_resolver,
        "publish_listen": publish_listen.map(|a| a.to_string()),
        "publish_per_minute": publish_per_minute,
        "http": http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_show_every_section_and_nothing_changed() {
        let d = Settings::default();
        let v = view(&d);
        for section in [
            "docking",
            "admin",
            "tls",
            "auth",
            "smtp",
            "log",
            "limits",
            "submission",
            "inbound",
            "policy",
            "queue",
            "imap",
            "dns",
            "network",
            "scan",
        ] {
            assert!(v[section].is_object(), "{section}");
        }
        assert_eq!(v["docking"]["missing"], "reject");
        assert_eq!(v["docking"]["sign"], "if-key");
        assert_eq!(v["docking"]["cipher"], "aes256-cbc");
        assert_eq!(v["smtp"]["encrypt_failure"], "hold");
        assert!(v["admin"]["socket"].is_null());
        assert_eq!(v["policy"]["encrypt"], "if-possible");
        assert_eq!(v["policy"]["subject_trigger"], "[secure]");
        assert!(v["submission"]["listen"].is_null());
        let s = Settings::parse(
            "[submission]\nlisten = \"127.0.0.1:2587\"\nauth = \"imaps://mail.example.org\"\nrelay = \"127.0.0.1:3525\"\n[policy.users.\"a@example.org\"]\nencrypt = \"mandatory\"\n",
        )
        .expect("settings");
        let v = view(&s);
        assert_eq!(v["submission"]["auth"], "imaps://mail.example.org:993");
        assert_eq!(
            v["policy"]["users"]["a@example.org"]["encrypt"],
            "mandatory"
        );
        assert!(v["policy"]["users"]["a@example.org"]["sign"].is_null());
    }
}
