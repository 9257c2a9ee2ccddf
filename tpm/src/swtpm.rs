//! A private swtpm for tests (feature `test-support`).
//!
//! [`Swtpm::start`] runs
//! `swtpm socket --tpm2 --server type=unixio,path=DIR/sock --ctrl type=unixio,path=DIR/sock.ctrl
//! --tpmstate dir=DIR --flags not-need-init,startup-clear` as a child process, waits (bounded,
//! polling) until its sockets accept, and stops it on drop. Its TCTI is `swtpm:path=DIR/sock`.
//! The state directory keeps the TPM's seeds across [`Swtpm::restart`], like a reboot: PCRs
//! start from zero again, the storage key is the same.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{Tpm, TpmError};

/// How long [`Swtpm::start`] waits for the sockets to accept.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// swtpm control command CMD_SHUTDOWN: shut the TPM down and exit.
const CMD_SHUTDOWN: u32 = 0x03;

/// A running swtpm process, owned by the test that started it.
#[derive(Debug)]
pub struct Swtpm {
    dir: PathBuf,
    child: Option<Child>,
}

impl Swtpm {
    /// Starts a swtpm whose state, sockets and log live in `state_dir` (created if missing;
    /// keep the path short: a Unix socket path is limited to 107 bytes).
    ///
    /// Fails with a message naming the Debian package `swtpm` when the binary is missing.
    pub fn start(state_dir: &Path) -> io::Result<Swtpm> {
        fs::create_dir_all(state_dir)?;
        let dir = state_dir.canonicalize()?;
        let mut s = Swtpm { dir, child: None };
        s.spawn()?;
        Ok(s)
    }

    /// The TCTI string for [`Tpm::connect`]: `swtpm:path=DIR/sock`.
    pub fn tcti(&self) -> String {
        format!("swtpm:path={}", self.socket_path().display())
    }

    /// The data socket (the control socket is the same path with `.ctrl` appended).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Connects a [`Tpm`] to this swtpm.
    pub fn connect(&self) -> Result<Tpm, TpmError> {
        Tpm::connect(&self.tcti())
    }

    /// Stops swtpm and starts it again on the same state: like a reboot (PCRs reset, seeds and
    /// NV kept).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Extends SHA-256 PCR `index` with `digest` through the TPM and returns its new value.
    pub fn extend_pcr(&self, index: u32, digest: &[u8; 32]) -> Result<[u8; 32], TpmError> {
        let mut tpm = self.connect()?;
        tpm.pcr_extend(index, digest)?;
        let sel = crate::PcrSelection::sha256(&[index])?;
        let values = tpm.read_pcrs(&sel)?;
        values
            .first()
            .map(|(_, v)| *v)
            .ok_or_else(|| TpmError::InvalidPcrs(format!("PCR {index} was not read back")))
    }

    /// Extends PCR 7 with `digest` (what a changed Secure Boot state does); returns its value.
    pub fn extend_pcr7(&self, digest: &[u8; 32]) -> Result<[u8; 32], TpmError> {
        self.extend_pcr(7, digest)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let sock = self.socket_path();
        let ctrl = self.dir.join("sock.ctrl");
        if sock.as_os_str().len() > 100 {
            return Err(io::Error::other(format!(
                "swtpm socket path {} is too long for a Unix socket; use a shorter state dir",
                sock.display()
            )));
        }
        for stale in [&sock, &ctrl] {
            match fs::remove_file(stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let stderr_path = self.dir.join("swtpm.stderr");
        let stderr = File::create(&stderr_path)?;
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.dir.display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        e.kind(),
                        "swtpm is not installed: install the Debian package `swtpm` \
                         (apt-get install swtpm)",
                    )
                } else {
                    io::Error::new(e.kind(), format!("cannot start swtpm: {e}"))
                }
            })?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "swtpm exited during start-up ({status}): {}",
                    log.trim()
                )));
            }
            if UnixStream::connect(&ctrl).is_ok() && UnixStream::connect(&sock).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "swtpm did not accept on {} within {START_TIMEOUT:?}",
                        sock.display()
                    ),
                ));
            }
            sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Asks swtpm to shut down (CMD_SHUTDOWN on the control socket), waits for it, and kills
    /// it if it does not exit in time.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let graceful = UnixStream::connect(self.dir.join("sock.ctrl")).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.write_all(&CMD_SHUTDOWN.to_be_bytes())?;
            let mut resp = [0u8; 4];
            c.read_exact(&mut resp)
        });
        if graceful.is_ok() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(5));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}
