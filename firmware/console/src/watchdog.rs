//! The boot's watchdog (`/dev/watchdog`: `i6300esb` under QEMU, the board's own on
//! hardware). Stage-1 (`rootfs/initramfs/init`) arms it before anything that could hang
//! (opening the device starts it; its close without the magic character leaves it running),
//! with a bound that covers the boot script. The health gate takes it over: it pets it while
//! it waits for the daemon, and once the gate has judged the boot it disarms it with the
//! magic close (`V`). A failed gate on an update boot reboots with the watchdog still
//! armed, so a shutdown that hangs is cut short too.
//!
//! Why the running box is not watched after the gate: what a watchdog can do is reboot, and
//! a reboot of a committed slot boots the same slot again; a petter tied to the daemon's
//! liveness would turn a daemon bug into a reboot loop of a box that still answers on its
//! console. The watchdog bounds the boot only: a hang before the gate's verdict (kernel,
//! boot script, daemon start) resets the box, and on an update boot GRUB counts that try.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// The watchdog device.
pub const DEVICE: &str = "/dev/watchdog";

/// An open watchdog; dropped without [`Watchdog::disarm`] it keeps running (the kernel
/// resets the box when nobody pets it).
pub struct Watchdog {
    dev: File,
}

impl Watchdog {
    /// Opens `path` if it exists (opening starts a watchdog that stage-1 did not start).
    pub fn open(path: &Path) -> Option<Watchdog> {
        let dev = OpenOptions::new().write(true).open(path).ok()?;
        Some(Watchdog { dev })
    }

    /// Resets the countdown.
    pub fn pet(&mut self) {
        let _ = self.dev.write_all(b"1");
        let _ = self.dev.flush();
    }

    /// Sets the countdown to `secs` seconds (`WDIOC_SETTIMEOUT`), if the driver can; the
    /// driver may round it. Without it the bound stays what stage-1 set.
    #[allow(unsafe_code)]
    pub fn set_timeout(&mut self, secs: u32) {
        use std::os::fd::AsRawFd;
        // _IOWR('W', 6, int) from <linux/watchdog.h>.
        const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
        let mut t: libc::c_int = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor is open for the lifetime of `self.dev`; the ioctl reads and
        // writes one `int` through the pointer, which points at `t` for the whole call.
        let _ = unsafe {
            libc::ioctl(
                self.dev.as_raw_fd(),
                WDIOC_SETTIMEOUT as _,
                &mut t as *mut libc::c_int,
            )
        };
    }

    /// Stops the watchdog: the magic character, then the close.
    pub fn disarm(mut self) {
        let _ = self.dev.write_all(b"V");
        let _ = self.dev.flush();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pets_with_a_byte_and_disarms_with_the_magic_close() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("watchdog");
        std::fs::write(&f, b"").unwrap();
        let mut w = Watchdog::open(&f).unwrap();
        w.pet();
        w.pet();
        w.disarm();
        assert_eq!(std::fs::read(&f).unwrap(), b"11V");
        assert!(Watchdog::open(&dir.path().join("missing")).is_none());
    }
}
