//! RAUC's D-Bus service, driven with zbus: install a bundle into the other slot (with its
//! progress), mark a slot good or bad, and read the slot table.
//!
//! On the box `rauc service` (Debian's RAUC, started by init) owns `de.pengutronix.rauc` on
//! the system bus; the box's bus policy lets only root and sealgated's user call it. The
//! bus is the system bus unless `DBUS_STARTER_BUS_TYPE=session` (the convention RAUC's own
//! client follows), which the host tests use to run RAUC's service on a private session bus.
//!
//! Who reaches this: only the admin API's update handlers (administrators) and the install
//! thread. Nothing RAUC answers is trusted beyond display: its messages are cut to 300
//! characters and its slot table is passed on as data.
//!
//! Verifying a bundle before it is accepted (`rauc info`, in `admin/update.rs`) does not
//! need the service and stays RAUC's command line: it runs before anything is installed,
//! also where no service runs.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use zbus::zvariant::{OwnedValue, Value};

const SERVICE: &str = "de.pengutronix.rauc";
const INTERFACE: &str = "de.pengutronix.rauc.Installer";

/// Why RAUC did not do what was asked.
#[derive(Debug)]
pub(crate) enum Error {
    /// The bus or RAUC's service does not answer.
    Unreachable(String),
    /// RAUC answered with an error (its message).
    Refused(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unreachable(m) => write!(f, "RAUC's service does not answer: {m}"),
            Error::Refused(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

fn short(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, msg, _) => {
                let n = name.as_str();
                if n.starts_with("org.freedesktop.DBus.Error.ServiceUnknown")
                    || n.starts_with("org.freedesktop.DBus.Error.NameHasNoOwner")
                    || n.starts_with("org.freedesktop.DBus.Error.NoReply")
                    || n.starts_with("org.freedesktop.DBus.Error.AccessDenied")
                {
                    Error::Unreachable(short(&format!("{n}: {}", msg.unwrap_or_default())))
                } else {
                    Error::Refused(short(&msg.unwrap_or_else(|| n.to_string())))
                }
            }
            zbus::Error::FDO(f) => match *f {
                zbus::fdo::Error::ServiceUnknown(m)
                | zbus::fdo::Error::NameHasNoOwner(m)
                | zbus::fdo::Error::NoReply(m)
                | zbus::fdo::Error::AccessDenied(m) => Error::Unreachable(short(&m)),
                other => Error::Refused(short(&other.to_string())),
            },
            other => Error::Unreachable(short(&other.to_string())),
        }
    }
}

/// The bus RAUC serves on.
async fn connect() -> Result<zbus::Connection, Error> {
    let session = std::env::var("DBUS_STARTER_BUS_TYPE").as_deref() == Ok("session");
    let c = if session {
        zbus::Connection::session().await
    } else {
        zbus::Connection::system().await
    };
    c.map_err(|e| Error::Unreachable(short(&e.to_string())))
}

async fn installer(conn: &zbus::Connection) -> Result<zbus::Proxy<'static>, Error> {
    Ok(zbus::proxy::Builder::new(conn)
        .destination(SERVICE)?
        .path("/")?
        .interface(INTERFACE)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?)
}

/// `Mark(state, slot)`: `state` is `good` or `bad`, `slot` `booted`, `other` or a slot name
/// (`rootfs.0`). RAUC's answer: the slot it marked and its message.
pub(crate) async fn mark(state: &str, slot: &str) -> Result<(String, String), Error> {
    within(CALL_LIMIT, async {
        let conn = connect().await?;
        let p = installer(&conn).await?;
        let (name, message): (String, String) = p.call("Mark", &(state, slot)).await?;
        Ok((short(&name), short(&message)))
    })
    .await
}

/// How long a call may wait for the bus and RAUC (a wedged service must not hold an admin
/// request: the answer then says it does not answer).
const CALL_LIMIT: Duration = Duration::from_secs(10);

async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(Error::Unreachable(format!(
            "no answer within {} s",
            limit.as_secs()
        )))
    })
}

/// The slot table in the shape of `rauc status --output-format=json` (`compatible`,
/// `variant`, `booted`, `boot_primary`, `slots: [{NAME: {bootname, state, boot_status,
/// slot_status: {bundle: {version, ...}, installed, activated, checksum, status}}}]`).
pub(crate) async fn slot_table() -> Result<serde_json::Value, Error> {
    within(CALL_LIMIT, slot_table_now()).await
}

async fn slot_table_now() -> Result<serde_json::Value, Error> {
    let conn = connect().await?;
    let p = installer(&conn).await?;
    let slots: Vec<(String, HashMap<String, OwnedValue>)> = p.call("GetSlotStatus", &()).await?;
    let compatible: String = p.get_property("Compatible").await.unwrap_or_default();
    let variant: String = p.get_property("Variant").await.unwrap_or_default();
    let booted: String = p.get_property("BootSlot").await.unwrap_or_default();
    // The custom boot backend may not answer "primary"; the table stands without it.
    let primary: Option<String> = p.call("GetPrimary", &()).await.ok();
    Ok(slot_table_json(compatible, variant, booted, primary, slots))
}

fn value_json(v: &Value<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Str(s) => J::String(short(s.as_str())),
        Value::Bool(b) => J::Bool(*b),
        Value::U8(n) => J::from(*n),
        Value::U16(n) => J::from(*n),
        Value::U32(n) => J::from(*n),
        Value::U64(n) => J::from(*n),
        Value::I16(n) => J::from(*n),
        Value::I32(n) => J::from(*n),
        Value::I64(n) => J::from(*n),
        Value::F64(n) => J::from(*n),
        Value::Value(inner) => value_json(inner),
        _ => J::Null,
    }
}

fn slot_table_json(
    compatible: String,
    variant: String,
    booted: String,
    primary: Option<String>,
    slots: Vec<(String, HashMap<String, OwnedValue>)>,
) -> serde_json::Value {
    use serde_json::{Map, Value as J};
    let mut list = Vec::new();
    for (name, dict) in slots {
        let mut slot = Map::new();
        let mut status = Map::new();
        let mut keys: Vec<_> = dict.keys().cloned().collect();
        keys.sort();
        for k in keys {
            let v = value_json(&dict[&k]);
            match k.as_str() {
                "boot-status" => {
                    slot.insert("boot_status".into(), v);
                }
                "sha256" | "size" => {
                    let c = status
                        .entry("checksum")
                        .or_insert_with(|| J::Object(Map::new()));
                    if let J::Object(c) = c {
                        c.insert(k, v);
                    }
                }
                "status" => {
                    status.insert(k, v);
                }
                _ => match k.split_once('.') {
                    Some((group, field)) => {
                        let g = status
                            .entry(group.to_string())
                            .or_insert_with(|| J::Object(Map::new()));
                        if let J::Object(g) = g {
                            g.insert(field.replace('-', "_"), v);
                        }
                    }
                    None => {
                        slot.insert(k.replace('-', "_"), v);
                    }
                },
            }
        }
        slot.insert("slot_status".into(), J::Object(status));
        let mut entry = Map::new();
        entry.insert(short(&name), J::Object(slot));
        list.push(J::Object(entry));
    }
    serde_json::json!({
        "compatible": short(&compatible),
        "variant": short(&variant),
        "booted": short(&booted),
        "boot_primary": primary.map(|p| short(&p)),
        "slots": list,
    })
}

/// How long an install may take before it counts as hung (the 64 MiB slot image is written
/// in seconds; the bound only stops a wedged service from holding the update state forever).
const INSTALL_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Installs `bundle` through `InstallBundle`, calls `progress(percent, message)` as RAUC
/// reports it, and returns when RAUC's `Completed` signal says how it ended (its
/// `LastError` when it failed).
pub(crate) async fn install(
    bundle: &std::path::Path,
    mut progress: impl FnMut(u8, &str),
) -> Result<(), Error> {
    let source = bundle
        .to_str()
        .ok_or_else(|| Error::Refused("the bundle's path is not UTF-8".into()))?
        .to_string();
    let conn = within(CALL_LIMIT, connect()).await?;
    let p = within(CALL_LIMIT, installer(&conn)).await?;
    // Subscribed before the call, so a quick install's signal is not missed.
    let mut completed = within(CALL_LIMIT, async {
        Ok(p.receive_signal("Completed").await?)
    })
    .await?;
    let args: HashMap<&str, Value<'_>> = HashMap::new();
    within(CALL_LIMIT, async {
        Ok(
            p.call::<_, _, ()>("InstallBundle", &(source.as_str(), args))
                .await?,
        )
    })
    .await?;
    let deadline = tokio::time::Instant::now() + INSTALL_LIMIT;
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    let mut last = (u8::MAX, String::new());
    let code = loop {
        tokio::select! {
            m = completed.next() => {
                let Some(m) = m else {
                    return Err(Error::Unreachable("the bus closed during the install".into()));
                };
                let code: i32 = m.body().deserialize()?;
                break code;
            }
            _ = tick.tick() => {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Unreachable(format!(
                        "no end of the install after {} minutes",
                        INSTALL_LIMIT.as_secs() / 60
                    )));
                }
                // The service gone mid-install is an error here, not a silent wait.
                let (pct, msg, _depth): (i32, String, i32) =
                    within(CALL_LIMIT, async { Ok(p.get_property("Progress").await?) }).await?;
                let pct = u8::try_from(pct.clamp(0, 100)).unwrap_or(0);
                if (pct, msg.as_str()) != (last.0, last.1.as_str()) {
                    progress(pct, &short(&msg));
                    last = (pct, msg);
                }
            }
        }
    };
    if code == 0 {
        progress(100, "installed");
        return Ok(());
    }
    let why: String = within(CALL_LIMIT, async { Ok(p.get_property("LastError").await?) })
        .await
        .unwrap_or_default();
    Err(Error::Refused(if why.trim().is_empty() {
        format!("RAUC ended the install with code {code}")
    } else {
        short(why.trim())
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_table_has_the_shape_of_rauc_status_json() {
        let mut a = HashMap::new();
        for (k, v) in [
            ("bootname", Value::from("A")),
            ("state", Value::from("booted")),
            ("boot-status", Value::from("good")),
            ("bundle.version", Value::from("0.2.0")),
            ("installed.count", Value::from(3u32)),
            ("sha256", Value::from("ab")),
            ("status", Value::from("ok")),
            ("device", Value::from("/dev/x\u{1b}[31m")),
        ] {
            a.insert(k.to_string(), OwnedValue::try_from(v).unwrap());
        }
        let j = slot_table_json(
            "sealgate-qemu-x86_64".into(),
            String::new(),
            "A".into(),
            None,
            vec![("rootfs.0".into(), a)],
        );
        assert_eq!(j["booted"], "A");
        assert_eq!(j["boot_primary"], serde_json::Value::Null);
        let s = &j["slots"][0]["rootfs.0"];
        assert_eq!(s["bootname"], "A");
        assert_eq!(s["state"], "booted");
        assert_eq!(s["boot_status"], "good");
        assert_eq!(s["slot_status"]["bundle"]["version"], "0.2.0");
        assert_eq!(s["slot_status"]["installed"]["count"], 3);
        assert_eq!(s["slot_status"]["checksum"]["sha256"], "ab");
        assert_eq!(s["slot_status"]["status"], "ok");
        assert_eq!(s["device"], "/dev/x [31m", "no control characters pass");
    }

    #[test]
    fn errors_say_whether_rauc_answered() {
        let e = Error::from(zbus::Error::FDO(Box::new(
            zbus::fdo::Error::ServiceUnknown("gone".into()),
        )));
        assert!(matches!(e, Error::Unreachable(_)), "{e}");
        assert!(e.to_string().starts_with("RAUC's service does not answer"));
        let e = Error::from(zbus::Error::Failure("x".into()));
        assert!(matches!(e, Error::Unreachable(_)), "{e}");
    }
}
