//! The menu's update page: the slot table and the update's state (the daemon's `GET
//! /api/v1/admin/update`; without the daemon RAUC's own `rauc status`), and an install from
//! a USB stick: a FAT or ext file system on a removable disk, mounted read-only (`nosuid`,
//! `nodev`, `noexec`) at `/run/sealgate/usb`, whose top folder holds `*.raucb` bundles. The
//! chosen bundle is streamed to the daemon's `POST /api/v1/admin/update` over the admin
//! socket, so it gets the same checks (signature against the box's keyring, board, version
//! floor), the vault's re-seal for the new slot and the same audit entry (`uid:0`) as an
//! upload through the network. The console never runs `rauc install` itself: without the
//! daemon's re-seal the new slot would boot with a locked vault.
//!
//! The attacker: whoever plugs in a stick. Nothing on it is executed (`noexec`) or trusted:
//! only files ending in `.raucb` in its top folder are offered, by name (control characters
//! replaced), and a bundle must verify against the keyring built into the read-only root.

use std::fs;
use std::path::{Path, PathBuf};

/// Where a USB stick is mounted.
pub const USB_MOUNT: &str = "/run/sealgate/usb";
/// At most this many bundles are offered.
pub const MAX_OFFERED: usize = 20;

/// The `*.raucb` regular files (not links) in `dir`'s top folder, sorted by name.
pub fn bundles_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("raucb"))
        })
        .collect();
    v.sort();
    v.truncate(MAX_OFFERED);
    v
}

/// A file name as the menu shows it (control characters replaced, at most 80 characters).
pub fn shown_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(80)
        .collect()
}

/// The block devices of removable disks (`/sys/block/<disk>/removable` is 1): their
/// partitions, or the disk itself when it has none (a stick formatted without a table).
pub fn removable_devices(sys_block: &Path) -> Vec<String> {
    let Ok(disks) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<PathBuf> = disks.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    disks.sort();
    let mut out = Vec::new();
    for d in disks {
        let removable = fs::read_to_string(d.join("removable")).unwrap_or_default();
        if removable.trim() != "1" {
            continue;
        }
        let Some(name) = d.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let mut parts: Vec<String> = fs::read_dir(&d)
            .map(|es| {
                es.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("partition").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        parts.sort();
        if parts.is_empty() {
            out.push(name);
        } else {
            out.extend(parts);
        }
    }
    out
}

/// What the daemon's answer to an install (`POST /update`, `POST /update/staged`) tells the
/// technician: installing (202), or why not.
pub fn install_answer(status: u16, answer: &[u8]) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    if status == 202 {
        return Ok(format!(
            "Installing {} into the other slot: follow it on this page; reboot when it says installed.",
            v["version"].as_str().unwrap_or("the bundle")
        ));
    }
    Err(format!(
        "{} ({status}): {}",
        v["title"].as_str().unwrap_or("sealgated refused it"),
        v["detail"].as_str().unwrap_or("")
    ))
}

/// The update page's text from the daemon's `GET /update` answer.
pub fn describe(v: &serde_json::Value) -> String {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("?").to_string();
    let mut t = String::new();
    t.push_str(&format!(
        "Running:   {} in slot {}\n",
        s(&v["running"]["version"]),
        s(&v["running"]["slot"])
    ));
    t.push_str(&format!(
        "Floor:     {} (no older bundle is installed)\n",
        s(&v["floor"])
    ));
    let state = s(&v["state"]);
    if state == "installing" {
        t.push_str(&format!(
            "Update:    installing {} ({}%)\n",
            s(&v["version"]),
            v["progress"].as_u64().unwrap_or(0)
        ));
    } else {
        t.push_str(&format!("Update:    {state}\n"));
    }
    if v["pending"].is_object() {
        t.push_str(&format!(
            "Pending:   {} in slot {}: reboot to run it; it is committed once it passes its health gate\n",
            s(&v["pending"]["version"]),
            s(&v["pending"]["slot"])
        ));
    }
    if let Some(staged) = v["staged"]["version"].as_str() {
        t.push_str(&format!(
            "Staged:    {staged} (uploaded by an administrator: entry 2 installs it)\n"
        ));
    }
    if let Some(e) = v["last_error"].as_str() {
        t.push_str(&format!("Last error: {e}\n"));
    }
    // RAUC's slot table (`rauc status --output-format=json`).
    if let Some(slots) = v["slots"]["slots"].as_array() {
        for entry in slots {
            let Some(map) = entry.as_object() else {
                continue;
            };
            for (name, slot) in map {
                let boot = slot["boot_status"].as_str().unwrap_or("?");
                let state = slot["state"].as_str().unwrap_or("?");
                let bootname = slot["bootname"].as_str().unwrap_or("?");
                let version = slot["slot_status"]["bundle"]["version"]
                    .as_str()
                    .unwrap_or("-");
                t.push_str(&format!(
                    "Slot {bootname}:    {name} {state}, {boot}, bundle {version}\n"
                ));
            }
        }
    }
    t.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn install_answers_say_installing_or_why_not() {
        assert!(
            install_answer(202, br#"{"version":"0.2.0"}"#)
                .unwrap()
                .starts_with("Installing 0.2.0 into the other slot")
        );
        let e = install_answer(
            409,
            br#"{"title":"No bundle is staged","detail":"upload one"}"#,
        )
        .unwrap_err();
        assert_eq!(e, "No bundle is staged (409): upload one");
        assert_eq!(
            install_answer(500, b"garbage").unwrap_err(),
            "sealgated refused it (500): "
        );
    }

    #[test]
    fn only_bundles_in_the_top_folder_are_offered() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b.raucb", "a.RAUCB", "notes.txt", "x.raucb.part"] {
            fs::write(d.path().join(f), b"x").unwrap();
        }
        fs::create_dir(d.path().join("sub.raucb")).unwrap();
        fs::write(d.path().join("sub.raucb").join("deep.raucb"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link.raucb")).unwrap();
        let names: Vec<String> = bundles_in(d.path()).iter().map(|p| shown_name(p)).collect();
        assert_eq!(names, ["a.RAUCB", "b.raucb"]);
        assert!(bundles_in(&d.path().join("missing")).is_empty());
        assert_eq!(
            shown_name(Path::new("/x/a\u{1b}[2Jb.raucb")),
            "a?[2Jb.raucb"
        );
    }

    #[test]
    fn removable_disks_give_their_partitions_or_themselves() {
        let d = tempfile::tempdir().unwrap();
        let disk = |name: &str, removable: &str, parts: &[&str]| {
            let p = d.path().join(name);
            fs::create_dir(&p).unwrap();
            fs::write(p.join("removable"), removable).unwrap();
            for part in parts {
                fs::create_dir(p.join(part)).unwrap();
                fs::write(p.join(part).join("partition"), "1\n").unwrap();
            }
            fs::create_dir(p.join("queue")).unwrap();
        };
        disk("vda", "0\n", &["vda1", "vda2"]);
        disk("sdb", "1\n", &["sdb1", "sdb2"]);
        disk("sdc", "1\n", &[]);
        assert_eq!(removable_devices(d.path()), ["sdb1", "sdb2", "sdc"]);
    }

    #[test]
    fn the_page_shows_the_slots_and_the_pending_update() {
        let v = serde_json::json!({
            "state": "installed", "progress": 100, "version": "0.2.0",
            "running": {"version": "0.1.0", "slot": "A"}, "floor": "0.1.0",
            "pending": {"version": "0.2.0", "slot": "B", "from_slot": "A"},
            "last_error": null,
            "slots": {"booted": "A", "slots": [
                {"rootfs.0": {"bootname": "A", "state": "booted", "boot_status": "good"}},
                {"rootfs.1": {"bootname": "B", "state": "inactive", "boot_status": "good",
                              "slot_status": {"bundle": {"version": "0.2.0"}}}}]}
        });
        let t = describe(&v);
        assert!(t.contains("Running:   0.1.0 in slot A"), "{t}");
        assert!(t.contains("Pending:   0.2.0 in slot B"), "{t}");
        assert!(
            t.contains("Slot B:    rootfs.1 inactive, good, bundle 0.2.0"),
            "{t}"
        );
        let t = describe(&serde_json::json!({"state": "failed", "last_error": "x\u{1b}y"}));
        assert!(t.contains("Last error: x?y"), "{t}");
    }
}
