//! The boot's timeline: when each stage of a boot first showed on the serial console, on the
//! host's clock from QEMU's start (the firmware and GRUB have no clock of their own to print).
//! `cargo xtask qemu --timeline` and the system tests print it.
//!
//! The box marks its own stages on the console: stage-1 init and `/etc/sealgate/boot` print
//! `... (up S s)` with the kernel's uptime, so the kernel's start (uptime 0) is placed on the
//! host's clock too (the arrival of the first such line, or of a kernel message with a
//! `[ S.SSSSSS]` stamp, less S).

use std::fmt;
use std::time::Duration;

/// The stages of a boot, in boot order, and the console text that marks each one's start.
/// An image that does not print a marker (an older one) shows the stage as not seen.
pub const BOOT_STAGES: &[(&str, &str)] = &[
    ("firmware: boot option", "BdsDxe: loading"),
    ("GRUB", "Welcome to GRUB!"),
    ("GRUB: slot chosen", "sealgate: booting slot"),
    // GRUB prints the image's device path when it has read (and checked) it and hands it to
    // the firmware's LoadImage (Authenticode check, PCR 4 measurement).
    ("GRUB: UKI read, to the firmware", "file path:"),
    ("UKI: EFI stub", "EFI stub:"),
    ("stage 1", "sealgate stage-1: start"),
    ("stage 1: slot verified", "verified (dm-verity"),
    (
        "stage 1: data partition",
        "sealgate stage-1: data partition",
    ),
    ("boot script", "sealgate: boot: start"),
    ("mounts done", "sealgate: boot: data mounted"),
    ("network started", "sealgate: boot: TPM"),
    // The boot script's TPM step: a first boot creates the vault there; a later boot's only
    // unseal is the daemon's own (the next stage).
    ("boot script: vault step done", "sealgate: boot: vault"),
    ("vault open", "sealgated: vault open"),
    ("daemon listening", "sealgated: listening admin"),
    ("ready", "sealgated: ready"),
];

/// One stage: its name and when it showed, if it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The stage.
    pub name: String,
    /// Time since QEMU started.
    pub at: Option<Duration>,
}

/// A boot's stages in boot order, with the console's first output and the kernel's start.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timeline {
    /// The stages.
    pub stages: Vec<Stage>,
}

/// When the transcript's first `end` bytes had all arrived: the first read that ended at or
/// past `end` (`arrivals` as in [`Timeline::from_console`]).
pub(crate) fn arrived(arrivals: &[(usize, Duration)], end: usize) -> Option<Duration> {
    arrivals
        .iter()
        .find(|(len, _)| *len >= end)
        .map(|(_, t)| *t)
}

impl Timeline {
    /// The timeline of a console transcript `seen`, whose reads ended at `arrivals` (length
    /// of the transcript then, time since QEMU started).
    pub fn from_console(seen: &[u8], arrivals: &[(usize, Duration)]) -> Timeline {
        let when = |end: usize| arrived(arrivals, end);
        let text = String::from_utf8_lossy(seen);
        let mut stages = vec![Stage {
            name: "firmware: first output".into(),
            at: arrivals.first().map(|(_, t)| *t),
        }];
        let mut found: Vec<(usize, Stage)> = Vec::new();
        for (name, needle) in BOOT_STAGES {
            if let Some(at) = text.find(needle) {
                found.push((
                    at,
                    Stage {
                        name: (*name).into(),
                        at: when(at + needle.len()),
                    },
                ));
            } else {
                found.push((
                    usize::MAX,
                    Stage {
                        name: (*name).into(),
                        at: None,
                    },
                ));
            }
        }
        // The kernel's start: the first line that carries its uptime.
        if let Some((at, start)) = kernel_start(&text, &when) {
            found.push((
                at,
                Stage {
                    name: "kernel (uptime 0)".into(),
                    at: Some(start),
                },
            ));
        }
        // Boot order: by the time each stage showed; stages not seen go last.
        found.sort_by_key(|(at, s)| (s.at.unwrap_or(Duration::MAX), *at));
        stages.extend(found.into_iter().map(|(_, s)| s));
        Timeline { stages }
    }

    /// When `name` showed.
    pub fn at(&self, name: &str) -> Option<Duration> {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.at)
    }
}

/// The kernel's start on the host clock, from the first line with its uptime: a kernel
/// message `[    1.234567] ...` or a marker of the box's `(up 1.23 s)`.
fn kernel_start(text: &str, when: &dyn Fn(usize) -> Option<Duration>) -> Option<(usize, Duration)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let uptime = printk_stamp(line).or_else(|| up_stamp(line));
        if let Some(up) = uptime {
            let arrived = when(start + line.trim_end().len())?;
            return Some((start, arrived.saturating_sub(up)));
        }
    }
    None
}

fn printk_stamp(line: &str) -> Option<Duration> {
    let rest = line.trim_start_matches(['\r', '\n']).strip_prefix('[')?;
    let (num, _) = rest.split_once(']')?;
    secs(num.trim())
}

fn up_stamp(line: &str) -> Option<Duration> {
    let (_, rest) = line.split_once("(up ")?;
    let (num, _) = rest.split_once(" s)")?;
    secs(num.trim())
}

fn secs(s: &str) -> Option<Duration> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    s.parse::<f64>().ok().map(Duration::from_secs_f64)
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "boot timeline (s after QEMU started; + the step from the previous stage seen):"
        )?;
        let mut last: Option<Duration> = None;
        for s in &self.stages {
            match s.at {
                Some(at) => {
                    let step = last
                        .map(|l| format!("+{:.2}", at.as_secs_f64() - l.as_secs_f64()))
                        .unwrap_or_default();
                    writeln!(f, "  {:>7.2} {:>7}  {}", at.as_secs_f64(), step, s.name)?;
                    last = Some(at);
                }
                None => writeln!(f, "  {:>7} {:>7}  {} (not seen)", "-", "", s.name)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_placed_by_their_arrival_and_the_kernel_by_its_uptime() {
        let a = "BdsDxe: loading Boot0001\r\nWelcome to GRUB!\r\nsealgate: booting slot A\r\n";
        let b = "sealgate stage-1: start (up 1.50 s)\n";
        let c = "sealgated: listening admin 0.0.0.0:8440\nsealgated: ready\n";
        let seen = format!("{a}{b}{c}");
        let arrivals = [
            (a.len(), Duration::from_secs(3)),
            (a.len() + b.len(), Duration::from_secs(6)),
            (seen.len(), Duration::from_secs(10)),
        ];
        let t = Timeline::from_console(seen.as_bytes(), &arrivals);
        assert_eq!(t.at("firmware: first output"), Some(Duration::from_secs(3)));
        assert_eq!(t.at("GRUB"), Some(Duration::from_secs(3)));
        assert_eq!(t.at("stage 1"), Some(Duration::from_secs(6)));
        assert_eq!(
            t.at("kernel (uptime 0)"),
            Some(Duration::from_secs_f64(4.5))
        );
        assert_eq!(t.at("ready"), Some(Duration::from_secs(10)));
        assert_eq!(t.at("vault open"), None);
        let names: Vec<_> = t.stages.iter().map(|s| s.name.as_str()).collect();
        let k = names
            .iter()
            .position(|n| *n == "kernel (uptime 0)")
            .unwrap();
        let s1 = names.iter().position(|n| *n == "stage 1").unwrap();
        assert!(k < s1, "{names:?}");
        let shown = t.to_string();
        assert!(shown.contains("+1.50  stage 1"), "{shown}");
        assert!(shown.contains("vault open (not seen)"), "{shown}");
    }

    #[test]
    fn printk_stamps_and_markers_are_read() {
        assert_eq!(
            printk_stamp("[    1.771331] ima: x"),
            Some(Duration::from_secs_f64(1.771331))
        );
        assert_eq!(printk_stamp("[=3h"), None);
        assert_eq!(
            up_stamp("sealgate: boot: vault (up 12.04 s)"),
            Some(Duration::from_secs_f64(12.04))
        );
        assert_eq!(up_stamp("nothing"), None);
    }
}
