//! Changing the settings while the daemon runs: `PATCH /settings` takes a JSON merge patch
//! (RFC 7396) over the model as `GET /settings` shows it (the settings file's own names and
//! spellings), and
//!
//! 1. applies it to the current model (`null` puts a field back to its default: the box's
//!    shipped value with `--box`, else the built-in one) and validates the result *as a
//!    whole* by parsing it exactly as the settings file is parsed (`settings.rs`: the same
//!    newtypes and cross-field checks; nothing is validated twice here). An unknown field, a
//!    wrong type or an invalid value is a 422 naming the field, and nothing changes;
//! 2. writes the settings file atomically (`sealgate_local::fsio`), only the fields that
//!    differ from the defaults, after keeping the file as it was in `FILE.previous`; the text
//!    is first read back the way the next start will read it (with `--box`: over the shipped
//!    settings) and must give the same model, so a change the file cannot express is refused;
//! 3. applies it to the running services: [`LIVE`] fields at once (log level, engine limits,
//!    weak signatures, SMTP access lists); listener addresses are *checked* by binding the new
//!    address, files it names (`[tls]` certificate and key, `trust_anchors`) by loading them,
//!    and like every other field take effect at the next start: the answer says
//!    `restart_required` and names them (rebinding a TLS listener in place would need the
//!    servers rebuilt; a restart is seconds and keeps one start-up path);
//! 4. if any of 3 fails, the file and the running state are put back and the answer is a 409
//!    naming the field and why;
//! 5. audits who changed which fields (paths only, never values).
//!
//! Who can call it: an `admin` session (with its CSRF token) or root on the local socket;
//! the change is serialised (one at a time). What an attacker with a stolen admin session
//! gets is what an admin gets; what a malformed patch gets is a 4xx.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sealgate_local::fsio::{Mode, write_atomic};
use serde_json::{Map, Value};

use super::settings_view::view;
use crate::problem::Problem;
use crate::settings::Settings;

/// Fields (dotted paths, or a `section.` prefix) that take effect without a restart.
pub const LIVE: [&str; 11] = [
    "log.level",
    "limits.",
    "docking.allow_weak_signatures",
    "smtp.allow_addresses",
    "smtp.certificate_addresses",
    "network.",
    "dns.views",
    "dns.forwarders",
    "dns.recursion_networks",
    "dns.own_view",
    "dns.resolv_conf",
];

/// Tables keyed by a name the administrator chooses: a patch may add entries to them (and
/// remove one with `null`).
const OPEN_TABLES: [&str; 3] = ["policy.domains", "policy.users", "submission.aliases"];

/// Listener addresses: a change is checked by binding the new address.
const LISTENERS: [&str; 4] = [
    "admin.listen",
    "docking.listen",
    "smtp.decrypt_listen",
    "smtp.encrypt_listen",
];

fn is_live(path: &str) -> bool {
    LIVE.iter().any(|l| {
        if l.ends_with('.') {
            path.starts_with(l)
        } else {
            path == *l
        }
    })
}

/// Sets the running log level (the daemon's log filters), or says why it cannot.
pub type LogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Command-line overrides of listener addresses (`--listen-admin`, `--listen-docking`):
/// they win over the file for this run and are never written to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// `--listen-admin`.
    pub admin: Option<SocketAddr>,
    /// `--listen-docking`.
    pub docking: Option<SocketAddr>,
}

/// The settings the daemon runs with, their file, and the lock that serialises changes.
pub struct SettingsStore {
    file: PathBuf,
    box_mode: bool,
    overrides: Overrides,
    /// The defaults a `null` restores and the file is written against.
    base: Settings,
    /// The model as read at start (what the running listeners use).
    started: Settings,
    current: Mutex<Settings>,
    log_level: LogLevel,
}

/// What a successful change did.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The fields that changed (dotted paths).
    pub changed: Vec<String>,
    /// Of those, the ones in force already.
    pub applied: Vec<String>,
    /// Whether some change (of this call or an earlier one) waits for a restart.
    pub restart_required: bool,
    /// The fields that differ from what the daemon started with and need a restart.
    pub pending_restart: Vec<String>,
    /// When the network change removed an address or route the box had (the admin may be
    /// connected through it): the seconds within which `POST /network/confirm` must come, or
    /// the previous network settings are put back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_within_secs: Option<u64>,
    /// The `network` section before the change (what a revert patches back).
    #[serde(skip)]
    pub network_before: Option<Value>,
}

impl SettingsStore {
    /// The settings file, when the daemon runs as the box (`--box`).
    pub fn box_file(&self) -> Option<&Path> {
        self.box_mode.then_some(self.file.as_path())
    }

    /// The store for `stored` (the file's model, without command-line overrides), written
    /// to `file`; `box_mode` as `sealgated --box`.
    pub fn new(
        file: PathBuf,
        box_mode: bool,
        stored: Settings,
        overrides: Overrides,
        log_level: LogLevel,
    ) -> anyhow::Result<SettingsStore> {
        let base = if box_mode {
            Settings::box_shipped()?
        } else {
            Settings::developer()
        };
        Ok(SettingsStore {
            file,
            box_mode,
            overrides,
            base,
            started: stored.clone(),
            current: Mutex::new(stored),
            log_level,
        })
    }

    fn stored(&self) -> Settings {
        match self.current.lock() {
            Ok(g) => g.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    fn with_overrides(&self, mut s: Settings) -> Settings {
        if let Some(a) = self.overrides.admin {
            s.admin.listen = a;
        }
        if let Some(a) = self.overrides.docking {
            s.docking.listen = a;
        }
        s
    }

    /// The `[network]` settings in force.
    pub fn network(&self) -> crate::network::Settings {
        self.stored().network
    }

    /// Whether the stored `[tls]` names the operator's certificate and key files (which the
    /// next start serves, whatever the admin API installed).
    pub fn tls_from_files(&self) -> bool {
        let t = self.stored().tls;
        t.certificate.is_some() && t.key.is_some()
    }

    /// The model in force (command-line overrides applied).
    #[cfg(test)]
    pub fn running(&self) -> Settings {
        self.with_overrides(self.stored())
    }

    /// `GET /settings`: every field; `default` mirrors it with `true` where a field has its
    /// default (the box's shipped value with `--box`); `changed` lists the others;
    /// `restart_required` lists changed fields waiting for a restart.
    pub fn describe(&self) -> Value {
        let stored = self.stored();
        let now = view(&self.with_overrides(stored.clone()));
        let base = view(&self.base);
        let mut changed = Vec::new();
        leaf_diff("", &now, &base, &mut changed);
        serde_json::json!({
            "settings": now,
            "default": defaults(&now, &base),
            "changed": changed,
            "restart_required": self.pending(&stored),
            "live": LIVE,
            "file": self.file.display().to_string(),
        })
    }

    fn pending(&self, stored: &Settings) -> Vec<String> {
        let mut d = Vec::new();
        leaf_diff("", &view(stored), &view(&self.started), &mut d);
        d.retain(|p| !is_live(p));
        d
    }

    /// Applies a merge patch; see the module documentation.
    pub fn patch(&self, patch: &Value) -> Result<Outcome, Problem> {
        let Value::Object(patch) = patch else {
            return Err(invalid(
                "",
                "the body must be a JSON object (an RFC 7396 merge patch)",
            ));
        };
        let mut guard = match self.current.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        let old = guard.clone();
        let cur = view(&old);
        let base = view(&self.base);
        let mut leaves = Vec::new();
        check_shape(patch, &cur, "", &mut leaves)?;
        let mut merged = cur.clone();
        merge_patch(&mut merged, &Value::Object(patch.clone()));
        restore_defaults(&mut merged, &base);
        let new = parse_model(&merged, &leaves)?;
        let new_view = view(&new);
        let mut changed = Vec::new();
        leaf_diff("", &new_view, &cur, &mut changed);
        if changed.is_empty() {
            return Ok(Outcome {
                changed,
                applied: Vec::new(),
                restart_required: !self.pending(&old).is_empty(),
                pending_restart: self.pending(&old),
                confirm_within_secs: None,
                network_before: None,
            });
        }
        let text = self.file_text(&new_view, &base)?;
        // The file must give back exactly this model when the daemon next reads it.
        let again = if self.box_mode {
            Settings::parse_over_box(text.as_bytes()).map_err(|e| invalid("", &e))?
        } else {
            Settings::parse(&text).map_err(|e| invalid("", &one_line(&format!("{e:#}"))))?
        };
        let mut lost = Vec::new();
        leaf_diff("", &view(&again), &new_view, &mut lost);
        if let Some(field) = lost.first() {
            return Err(invalid(
                field,
                &format!(
                    "{field} cannot be set to this in the settings file (it would read back as \
                     the box's shipped value)"
                ),
            ));
        }

        let previous = match std::fs::read(&self.file) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(not_applied("", &format!("reading the settings file: {e}"))),
        };
        if let Some(p) = &previous {
            write_atomic(&previous_path(&self.file), p, Mode::KeepOr(0o600))
                .map_err(|e| not_applied("", &format!("keeping the previous settings: {e}")))?;
        }
        write_atomic(&self.file, text.as_bytes(), Mode::KeepOr(0o600))
            .map_err(|e| not_applied("", &format!("writing the settings file: {e}")))?;
        // Written by this release: its format.
        crate::settings_migrate::mark_current(&self.file)
            .map_err(|e| not_applied("", &format!("writing the settings version: {e}")))?;

        let applied = self.apply(&new, &changed);
        if let Err((field, why)) = applied.clone() {
            let restored = match &previous {
                Some(p) => write_atomic(&self.file, p, Mode::KeepOr(0o600)),
                None => std::fs::remove_file(&self.file),
            };
            let _ = self.apply(&old, &[]);
            let back = match restored {
                Ok(()) => "the previous settings are back".to_string(),
                Err(e) => {
                    tracing::error!(error = %e, file = %self.file.display(), "cannot restore the settings file");
                    format!(
                        "the running settings are back, but the file could not be restored: {e}"
                    )
                }
            };
            return Err(not_applied(&field, &format!("{field}: {why}; {back}")));
        }
        *guard = new.clone();
        drop(guard);
        let pending = self.pending(&new);
        let confirm = applied.unwrap_or(false) && new.network.confirm_secs > 0;
        Ok(Outcome {
            applied: changed.iter().filter(|p| is_live(p)).cloned().collect(),
            changed,
            restart_required: !pending.is_empty(),
            pending_restart: pending,
            confirm_within_secs: confirm.then_some(new.network.confirm_secs),
            network_before: confirm.then(|| cur["network"].clone()),
        })
    }

    /// Puts `s` in force where the running services allow it; checks the listeners among
    /// `changed`. The error names the field. True when the network's reconcile removed an
    /// address or route. With `changed` empty (a rollback) the network is reconciled too.
    fn apply(&self, s: &Settings, changed: &[String]) -> Result<bool, (String, String)> {
        let listener = |s: &Settings, field: &str| match field {
            "admin.listen" => Some(s.admin.listen),
            "docking.listen" => Some(s.docking.listen),
            "smtp.decrypt_listen" => s.smtp.decrypt_listen,
            _ => s.smtp.encrypt_listen,
        };
        for field in changed.iter().filter(|f| LISTENERS.contains(&f.as_str())) {
            let addr = listener(s, field);
            // Back to the address this daemon listens on: it holds it already.
            let running = self.with_overrides(self.started.clone());
            if addr == listener(&self.started, field) || addr == listener(&running, field) {
                continue;
            }
            if let Some(addr) = addr
                && let Err(e) = std::net::TcpListener::bind(addr)
            {
                return Err((field.clone(), format!("cannot listen on {addr}: {e}")));
            }
        }
        // Files the next start reads: a change naming one it cannot use is refused now,
        // not found out when the daemon does not start.
        if changed.iter().any(|f| f.starts_with("tls."))
            && let (Some(c), Some(k)) = (&s.tls.certificate, &s.tls.key)
        {
            crate::identity::check_files(c, k)
                .map_err(|e| ("tls.certificate".to_string(), one_line(&format!("{e:#}"))))?;
        }
        if changed.iter().any(|f| f == "docking.trust_anchors")
            && let Some(p) = &s.docking.trust_anchors
        {
            let bytes = std::fs::read(p).map_err(|e| {
                (
                    "docking.trust_anchors".to_string(),
                    format!("reading {}: {e}", p.display()),
                )
            })?;
            sealgate_smime::cert::Certificate::parse_many(&bytes).map_err(|e| {
                (
                    "docking.trust_anchors".to_string(),
                    format!("{}: {e}", p.display()),
                )
            })?;
        }
        // Trust anchors the gateway's clients need at start: a change they cannot be built
        // from would stop the daemon at its next start.
        if changed.iter().any(|f| f.starts_with("submission.")) {
            crate::gateway::verifier(&s.submission, "localhost")
                .map_err(|e| ("submission.auth".to_string(), one_line(&format!("{e:#}"))))?;
        }
        if changed.iter().any(|f| f.starts_with("imap.")) {
            crate::imap::check_upstream(&s.imap)
                .map_err(|e| ("imap.upstream".to_string(), one_line(&format!("{e:#}"))))?;
        }
        (self.log_level)(&s.log.level).map_err(|e| ("log.level".to_string(), e))?;
        crate::docking::configure(s);
        crate::smtp::configure_access(s);
        if changed.is_empty() || changed.iter().any(|f| f.starts_with("dns.")) {
            crate::dns::configure(&s.dns);
        }
        let mut removed = false;
        if changed.is_empty() || changed.iter().any(|f| f.starts_with("network.")) {
            let a = crate::network::netlink::reconcile(&s.network)
                .map_err(|e| ("network".to_string(), e))?;
            if !a.changes.is_empty() {
                tracing::info!(changes = %a.changes.join("; "), "network changed");
            }
            removed = a.removed;
        }
        Ok(removed)
    }

    /// The file's text: a header and the fields that differ from the defaults.
    fn file_text(&self, new_view: &Value, base: &Value) -> Result<String, Problem> {
        let mut only = Map::new();
        if let (Value::Object(n), Value::Object(b)) = (new_view, base) {
            for (section, fields) in n {
                let (Value::Object(f), Some(Value::Object(bf))) = (fields, b.get(section)) else {
                    continue;
                };
                let differ: Map<String, Value> = f
                    .iter()
                    .filter(|(k, v)| !v.is_null() && bf.get(*k) != Some(*v))
                    // A table's entries leave out what they do not set (a policy's
                    // inherited levels): TOML has no null.
                    .map(|(k, v)| (k.clone(), without_nulls(v)))
                    .collect();
                if !differ.is_empty() {
                    only.insert(section.clone(), Value::Object(differ));
                }
            }
        }
        let body = toml::to_string(&Value::Object(only))
            .map_err(|e| invalid("", &format!("not expressible as TOML: {e}")))?;
        let against = if self.box_mode {
            "the box's shipped settings"
        } else {
            "the built-in defaults"
        };
        Ok(format!(
            "# sealgated's settings, written by the admin API: what differs from {against}.\n\
             # The version before the last change is in {}.\n\n{body}",
            previous_path(&self.file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))
    }
}

/// `FILE.previous` beside the settings file.
pub fn previous_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    file.with_file_name(name)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// 422: a bad patch; nothing changed.
fn invalid(field: &str, why: &str) -> Problem {
    let mut p = Problem::new(
        422,
        "invalid-settings",
        "The settings change is invalid",
        if field.is_empty() || why.starts_with(field) {
            why.to_string()
        } else {
            format!("{field}: {why}")
        },
    );
    if !field.is_empty() {
        p.field = Some(field.into());
    }
    p
}

/// 409: valid, but it could not be put in force; everything was put back.
fn not_applied(field: &str, why: &str) -> Problem {
    let mut p = Problem::new(
        409,
        "settings-not-applied",
        "The settings change could not be applied",
        why,
    );
    if !field.is_empty() {
        p.field = Some(field.into());
    }
    p
}

/// Checks that every member of `patch` names a field of the model (`cur`, as shown by
/// `GET`) and that sections stay objects; collects the patched fields' paths.
fn check_shape(
    patch: &Map<String, Value>,
    cur: &Value,
    prefix: &str,
    leaves: &mut Vec<String>,
) -> Result<(), Problem> {
    for (k, v) in patch {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match cur.get(k) {
            // A new entry of a table keyed by name (a domain's policy, a login's aliases):
            // the parse of the whole model checks it.
            None if OPEN_TABLES.contains(&prefix) => leaves.push(path),
            None => return Err(invalid(&path, &format!("{path}: no such setting"))),
            Some(Value::Object(fields)) => match v {
                Value::Object(p) => check_shape(p, &Value::Object(fields.clone()), &path, leaves)?,
                // The whole section back to its defaults.
                Value::Null => leaves.extend(fields.keys().map(|f| format!("{path}.{f}"))),
                _ => {
                    return Err(invalid(
                        &path,
                        &format!("{path} is a section: give an object of its fields"),
                    ));
                }
            },
            Some(_) => leaves.push(path),
        }
    }
    Ok(())
}

/// RFC 7396 §2.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Fields a `null` removed take their default.
fn restore_defaults(merged: &mut Value, base: &Value) {
    let (Value::Object(m), Value::Object(b)) = (merged, base) else {
        return;
    };
    for (section, fields) in b {
        let entry = m
            .entry(section.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let (Value::Object(mf), Value::Object(bf)) = (entry, fields) {
            for (k, v) in bf {
                mf.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// `v` without null members (an unset optional field is absent from the file).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The model `merged` describes, parsed as the settings file is; a failure names the field.
fn parse_model(merged: &Value, leaves: &[String]) -> Result<Settings, Problem> {
    let whole = toml::to_string(&without_nulls(merged)).map_err(|e| {
        let field = culprit(merged, leaves).map(|(f, _)| f).unwrap_or_default();
        invalid(&field, &format!("{field}: not a settings value ({e})"))
    })?;
    Settings::parse(&whole).map_err(|e| match culprit(merged, leaves) {
        Some((field, why)) => invalid(&field, &format!("{field}: {why}")),
        // Each field is fine alone: a rule between fields (the message names them).
        None => invalid("", &one_line(&format!("{e:#}"))),
    })
}

/// The first patched field that is wrong on its own, and why.
fn culprit(merged: &Value, leaves: &[String]) -> Option<(String, String)> {
    for path in leaves {
        let Some((section, field)) = path.split_once('.') else {
            continue;
        };
        // An entry of a table keyed by name (whose name may hold dots) is tried alone.
        if let Some((table, key, v)) = table_entry(merged, path) {
            let one = serde_json::json!({ section: { table: { key.clone(): without_nulls(v) } } });
            let why = match toml::to_string(&one) {
                Err(e) => Some(format!("not a settings value ({e})")),
                Ok(text) => toml::from_str::<Settings>(&text)
                    .err()
                    .map(|e| e.message().to_string()),
            };
            if let Some(why) = why {
                return Some((format!("{section}.{table}.{key}"), one_line(&why)));
            }
            continue;
        }
        let Some(v) = merged.get(section).and_then(|s| s.get(field)) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        let one = serde_json::json!({ section: { field: without_nulls(v) } });
        let why = match toml::to_string(&one) {
            Err(e) => Some(format!("not a settings value ({e})")),
            Ok(text) => toml::from_str::<Settings>(&text)
                .err()
                .map(|e| e.message().to_string()),
        };
        if let Some(why) = why {
            return Some((path.clone(), one_line(&why)));
        }
    }
    None
}

/// For `path` inside one of [`OPEN_TABLES`]: the table's field name, the entry's key (the
/// longest that `path` names) and its value in `merged`.
fn table_entry<'a>(merged: &'a Value, path: &str) -> Option<(&'static str, String, &'a Value)> {
    let t = OPEN_TABLES.iter().find(|t| {
        path.len() > t.len() && path.starts_with(*t) && path[t.len()..].starts_with('.')
    })?;
    let rest = &path[t.len() + 1..];
    let (section, table) = t.split_once('.')?;
    let entries = merged.get(section)?.get(table)?.as_object()?;
    let (key, v) = entries
        .iter()
        .filter(|(k, _)| rest == k.as_str() || rest.starts_with(&format!("{k}.")))
        .max_by_key(|(k, _)| k.len())?;
    Some((table, key.clone(), v))
}

/// The dotted paths of the leaves of `a` that differ from `b`'s.
fn leaf_diff(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let name = |k: &str| {
                if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                }
            };
            for (k, v) in x {
                leaf_diff(&name(k), v, y.get(k).unwrap_or(&Value::Null), out);
            }
            // An entry removed from a table keyed by name.
            out.extend(y.keys().filter(|k| !x.contains_key(*k)).map(|k| name(k)));
        }
        (x, y) if x == y => {}
        _ => out.push(prefix.to_string()),
    }
}

/// `now` with every leaf replaced by whether it equals `base`'s.
fn defaults(now: &Value, base: &Value) -> Value {
    match now {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), defaults(v, base.get(k).unwrap_or(&Value::Null))))
                .collect(),
        ),
        v => Value::Bool(v == base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(dir: &Path, box_mode: bool) -> SettingsStore {
        let s = if box_mode {
            Settings::box_shipped().expect("shipped")
        } else {
            Settings::developer()
        };
        SettingsStore::new(
            dir.join("settings.toml"),
            box_mode,
            s,
            Overrides::default(),
            Box::new(|l| {
                tracing_subscriber::EnvFilter::try_new(l)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        )
        .expect("store")
    }

    #[test]
    fn a_patch_changes_the_file_and_the_model_and_keeps_the_previous_file() {
        let d = tempfile::tempdir().expect("dir");
        let st = store(d.path(), false);
        let o = st
            .patch(&json!({"docking": {"missing": "encrypt-known"}, "log": {"level": "debug"}}))
            .expect("patched");
        assert_eq!(o.changed, vec!["docking.missing", "log.level"]);
        assert_eq!(o.applied, vec!["log.level"]);
        assert!(o.restart_required);
        assert_eq!(o.pending_restart, vec!["docking.missing"]);
        let text = std::fs::read_to_string(d.path().join("settings.toml")).expect("file");
        let s = Settings::parse(&text).expect("the file parses");
        assert_eq!(
            s.docking.missing,
            crate::settings::MissingPolicy::EncryptKnown
        );
        assert!(!text.contains("listen"), "only what differs: {text}");
        assert!(!d.path().join("settings.toml.previous").exists());
        st.patch(&json!({"docking": {"missing": null}}))
            .expect("back");
        let prev = std::fs::read_to_string(d.path().join("settings.toml.previous")).expect("kept");
        assert_eq!(prev, text);
        let g = st.describe();
        assert_eq!(g["default"]["docking"]["missing"], true);
        assert_eq!(g["default"]["log"]["level"], false);
        assert_eq!(g["changed"], json!(["log.level"]));
        assert_eq!(g["restart_required"], json!([]));
    }

    #[test]
    fn policy_tables_take_new_entries_and_lose_them_with_null() {
        let d = tempfile::tempdir().expect("dir");
        let st = store(d.path(), false);
        let o = st
            .patch(&json!({"policy": {"domains": {"example.org": {"encrypt": "mandatory", "sign": null}},
                "users": {"a@example.org": {"sign": "always"}}}}))
            .expect("added");
        assert_eq!(
            o.changed,
            ["policy.domains.example.org", "policy.users.a@example.org"]
        );
        let v = st.describe();
        assert_eq!(
            v["settings"]["policy"]["domains"]["example.org"]["encrypt"],
            "mandatory"
        );
        assert!(v["live"].as_array().is_some_and(|l| !l.is_empty()));
        let o = st
            .patch(&json!({"policy": {"domains": {"example.org": null}}}))
            .expect("removed");
        assert_eq!(o.changed, ["policy.domains.example.org"]);
        assert!(st.describe()["settings"]["policy"]["domains"]["example.org"].is_null());
        // A bad level in a new entry is refused, and nothing changes.
        let e = st
            .patch(&json!({"policy": {"domains": {"b.example": {"encrypt": "sometimes"}}}}))
            .expect_err("bad level");
        assert_eq!(e.status, 422);
        assert!(st.describe()["settings"]["policy"]["domains"]["b.example"].is_null());
        let e = st
            .patch(&json!({"policy": {"domains": {"not a domain!": {"encrypt": "never"}}}}))
            .expect_err("bad name");
        assert_eq!(e.field.as_deref(), Some("policy.domains.not a domain!"));
        assert!(e.detail.contains("is not a mail domain"), "{}", e.detail);
        // Other sections still refuse fields they do not have.
        let e = st
            .patch(&json!({"policy": {"nothing": 1}}))
            .expect_err("unknown");
        assert_eq!(e.status, 422);
    }

    #[test]
    fn bad_patches_name_the_field_and_change_nothing() {
        let d = tempfile::tempdir().expect("dir");
        let st = store(d.path(), false);
        for (patch, field) in [
            (
                json!({"docking": {"listen_port": 1}}),
                "docking.listen_port",
            ),
            (json!({"colour": {}}), "colour"),
            (json!({"docking": 5}), "docking"),
            (json!({"docking": {"missing": "maybe"}}), "docking.missing"),
            (
                json!({"docking": {"max_message_bytes": "big"}}),
                "docking.max_message_bytes",
            ),
            (
                json!({"docking": {"request_timeout_secs": 0}}),
                "docking.request_timeout_secs",
            ),
            (
                json!({"smtp": {"allow_addresses": ["192.0.2.1/24"]}}),
                "smtp.allow_addresses",
            ),
            (json!({"log": {"level": "sealgated=loud"}}), ""),
            (json!({"limits": {"max_signers": 0}}), ""),
        ] {
            let p = st.patch(&patch).expect_err("refused");
            assert_eq!(p.status, 422, "{patch}: {p:?}");
            if !field.is_empty() {
                assert_eq!(p.field.as_deref(), Some(field), "{patch}: {p:?}");
                assert!(p.detail.contains(field), "{p:?}");
            }
        }
        assert!(st.patch(&json!([1])).is_err());
        assert!(!d.path().join("settings.toml").exists());
    }

    #[test]
    fn a_box_writes_over_its_shipped_settings() {
        let d = tempfile::tempdir().expect("dir");
        let st = store(d.path(), true);
        st.patch(&json!({"limits": {"max_signers": 4}}))
            .expect("patched");
        let b = Settings::load_box(&d.path().join("settings.toml")).expect("loads");
        assert!(b.fallback.is_none(), "{:?}", b.fallback);
        assert_eq!(b.settings.limits.max_signers, 4);
        assert_eq!(b.settings.admin.listen.port(), 8440);
        // Back to the defaults: the file still reads as the box's settings (not "empty").
        st.patch(&json!({"limits": null})).expect("patched");
        let b = Settings::load_box(&d.path().join("settings.toml")).expect("loads");
        assert!(b.fallback.is_none(), "{:?}", b.fallback);
        assert!(
            st.describe()["changed"]
                .as_array()
                .expect("list")
                .is_empty()
        );
    }

    #[test]
    fn a_listener_that_cannot_be_bound_is_rolled_back() {
        let d = tempfile::tempdir().expect("dir");
        let st = store(d.path(), false);
        st.patch(&json!({"log": {"level": "warn"}})).expect("first");
        let before = std::fs::read(d.path().join("settings.toml")).expect("file");
        let p = st
            .patch(&json!({"docking": {"listen": "192.0.2.1:9"}, "log": {"level": "debug"}}))
            .expect_err("cannot bind");
        assert_eq!(p.status, 409, "{p:?}");
        assert_eq!(p.field.as_deref(), Some("docking.listen"));
        assert_eq!(
            std::fs::read(d.path().join("settings.toml")).expect("file"),
            before
        );
        assert_eq!(st.running().log.level, "warn");
    }

    #[test]
    fn files_the_next_start_needs_are_checked_now() {
        let d = tempfile::tempdir().expect("dir");
        let st = store(d.path(), false);
        let garbage = d.path().join("anchors.pem");
        std::fs::write(&garbage, b"not a certificate").expect("write");
        for patch in [
            json!({"docking": {"trust_anchors": d.path().join("missing.pem")}}),
            json!({"docking": {"trust_anchors": garbage}}),
            json!({"tls": {"certificate": d.path().join("c.pem"), "key": d.path().join("k.pem")}}),
        ] {
            let p = st.patch(&patch).expect_err("refused");
            assert_eq!(p.status, 409, "{patch}: {p:?}");
        }
        assert!(!d.path().join("settings.toml").exists());
    }

    #[test]
    fn a_listener_moved_and_back_is_not_refused_for_its_own_address() {
        // The daemon holds its listener: moving back to it must not fail the bind check.
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr");
        let d = tempfile::tempdir().expect("dir");
        let mut s = Settings::developer();
        s.docking.listen = addr;
        let st = SettingsStore::new(
            d.path().join("settings.toml"),
            false,
            s,
            Overrides::default(),
            Box::new(|_| Ok(())),
        )
        .expect("store");
        let o = st
            .patch(&json!({"docking": {"listen": "127.0.0.1:0"}}))
            .expect("moved");
        assert_eq!(o.pending_restart, vec!["docking.listen"]);
        let o = st
            .patch(&json!({"docking": {"listen": addr.to_string()}}))
            .expect("back");
        assert!(!o.restart_required, "{o:?}");
        drop(held);
    }
}
