//! Loopback TCP to Unix-socket relay for `swtpm:path=SOCKET`.
//!
//! libtss2's swtpm TCTI can talk to a Unix socket (`path=`), but tss-esapi 7.7 can only hand
//! it `host=` and `port=`. So for `swtpm:path=SOCK` this crate listens on two consecutive
//! loopback ports (data `P`, control `P + 1`, the swtpm TCTI's convention) and forwards each
//! connection to `SOCK` and `SOCK.ctrl`. The TCTI opens one connection per command, so one
//! thread per listener suffices. This is used with swtpm only (tests, development); the box
//! uses `device:`. The relay lives as long as the [`crate::Tpm`] that owns it.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

pub(crate) struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<(SocketAddr, JoinHandle<()>)>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:P` to `sock` and `127.0.0.1:P+1` to `sock.ctrl`.
    pub(crate) fn start(sock: &Path) -> io::Result<Relay> {
        let mut ctrl_path = sock.as_os_str().to_owned();
        ctrl_path.push(".ctrl");
        let ctrl_path = PathBuf::from(ctrl_path);

        let (data, ctrl) = bind_pair()?;
        let port = data.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (listener, target) in [(data, sock.to_path_buf()), (ctrl, ctrl_path)] {
            let addr = listener.local_addr()?;
            let stop = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name("sealgate-tpm-relay".into())
                .spawn(move || serve(listener, &target, &stop))?;
            threads.push((addr, handle));
        }
        Ok(Relay {
            port,
            stop,
            threads,
        })
    }

    /// The TCTI string tss-esapi can use.
    pub(crate) fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (addr, handle) in self.threads.drain(..) {
            // Wake the accept() so the thread sees the flag.
            drop(TcpStream::connect(addr));
            drop(handle.join());
        }
    }
}

/// Two listeners on consecutive loopback ports.
fn bind_pair() -> io::Result<(TcpListener, TcpListener)> {
    let mut last_err = None;
    for _ in 0..64 {
        let data = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = data.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        match TcpListener::bind((Ipv4Addr::LOCALHOST, next)) {
            Ok(ctrl) => return Ok((data, ctrl)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no two consecutive loopback ports free")))
}

fn serve(listener: TcpListener, target: &Path, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(tcp) = conn else { continue };
        // On failure the TCP side is dropped and the TCTI reports an I/O error.
        if let Ok(unix) = UnixStream::connect(target) {
            pump(tcp, unix);
        }
    }
}

/// Copies both ways until both sides are done.
fn pump(tcp: TcpStream, unix: UnixStream) {
    drop(tcp.set_nodelay(true));
    let (Ok(mut tcp_r), Ok(mut unix_w)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        drop(io::copy(&mut tcp_r, &mut unix_w));
        drop(unix_w.shutdown(Shutdown::Write));
    });
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    drop(io::copy(&mut unix_r, &mut tcp_w));
    drop(tcp_w.shutdown(Shutdown::Both));
    drop(unix_r.shutdown(Shutdown::Both));
    drop(up.join());
}
