//! `--run-as USER`: the box's service starts the daemon as root and the daemon becomes the
//! unprivileged user at once, keeping only the capabilities its network needs, before any
//! other thread exists (capabilities are per thread; later threads inherit them).
//!
//! Kept: `CAP_NET_ADMIN` (links, addresses, routes through netlink: `[network]`) and
//! `CAP_SYS_TIME` (the SNTP client sets the clock). Not kept: everything else, including
//! `CAP_SYS_ADMIN` (so `network.hostname` is refused by the kernel on the box and said on the
//! console; the boot sets the hostname) and `CAP_NET_RAW` (the DHCP client uses a UDP socket
//! bound to its link). The two are also raised as ambient capabilities, so the daemon's
//! restart (it re-executes itself as the same user) keeps them; a child program would too,
//! and the daemon starts none that is not its own.
//!
//! The user is looked up in `/etc/passwd` (the box's own file, on the verified root), not
//! through NSS.

use anyhow::{Context, Result, bail};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};

/// The capabilities the daemon keeps.
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_SYS_TIME];

/// The uid and gid of `user` in a passwd file's text.
fn lookup(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0] != user {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

/// Becomes `user` keeping [`KEPT`]; nothing to do when the process already runs as `user`
/// (the daemon's restart re-executes it with the same arguments).
pub fn run_as(user: &str) -> Result<()> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    let (uid, gid) = lookup(&passwd, user).with_context(|| format!("no user {user:?}"))?;
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if uid.is_root() {
        bail!("--run-as must name an unprivileged user");
    }
    if Uid::current() == uid && Uid::effective() == uid {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        bail!("--run-as {user}: only root can become another user");
    }
    let kept: CapsHashSet = KEPT.into_iter().collect();
    caps::securebits::set_keepcaps(true).context("keeping capabilities")?;
    nix::unistd::setgroups(&[gid]).context("setgroups")?;
    nix::unistd::setresgid(gid, gid, gid).context("setresgid")?;
    nix::unistd::setresuid(uid, uid, uid).context("setresuid")?;
    // Effective first: it must stay a subset of the permitted set being narrowed.
    caps::set(None, CapSet::Effective, &kept).context("effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("permitted capabilities")?;
    caps::set(None, CapSet::Inheritable, &kept).context("inheritable capabilities")?;
    caps::set(None, CapSet::Ambient, &kept).context("ambient capabilities")?;
    caps::securebits::set_keepcaps(false).context("keepcaps off")?;
    if Uid::current() != uid || Uid::effective() != uid {
        bail!("still not {user}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_come_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/false\nsealgate:x:100:101::/nonexistent:/bin/false\nbad:x:y:1\n";
        assert_eq!(lookup(passwd, "sealgate"), Some((100, 101)));
        assert_eq!(lookup(passwd, "root"), Some((0, 0)));
        assert_eq!(lookup(passwd, "bad"), None);
        assert_eq!(lookup(passwd, "sealgat"), None);
    }
}
