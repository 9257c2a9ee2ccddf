//! The DHCPv4 client's state machine (RFC 2131 §4.4), without sockets: the caller sends what
//! [`Client::poll`] returns, feeds every datagram received on port 68 to [`Client::receive`],
//! and applies the [`Event`]s (a lease bound, renewed or lost) to the kernel.
//!
//! Requests set the broadcast flag, so servers answer to 255.255.255.255 and a plain UDP
//! socket bound to the link receives the answer before the link has an address.
//!
//! Who sends what it reads: anyone on the link (a rogue DHCP server, a spoofer). A datagram
//! changes the state only if it decodes, is a BOOTREPLY with our transaction ID and hardware
//! address, has the message type the state waits for, and (after an OFFER was chosen) comes
//! from the chosen server; the lease is checked by [`Lease::from_reply`] before it is used.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

/// Lease times shorter than this are taken as this (a server cannot make us send a request
/// every second).
pub const MIN_LEASE: Duration = Duration::from_secs(60);
/// Lease times longer than this (or "infinite") are taken as this, so the lease is renewed
/// at least every 12 hours.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
/// At most this many name and NTP servers are kept from a lease.
pub const MAX_SERVERS: usize = 3;
/// The first retransmission wait while selecting or requesting; doubled up to
/// [`MAX_RETRANSMIT`] (RFC 2131 §4.1 suggests 4 s doubling to 64 s; a box waiting at start
/// prefers quicker first tries).
pub const FIRST_RETRANSMIT: Duration = Duration::from_secs(2);
/// The longest wait between retransmissions.
pub const MAX_RETRANSMIT: Duration = Duration::from_secs(32);
/// REQUESTs sent for one OFFER before starting over with a DISCOVER.
const REQUEST_TRIES: u32 = 4;

/// A lease as the box uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address leased.
    pub address: Ipv4Addr,
    /// Its prefix length (from the subnet mask).
    pub prefix: u8,
    /// The default gateway (inside the subnet), if the server gave one.
    pub router: Option<Ipv4Addr>,
    /// Name servers (at most [`MAX_SERVERS`]).
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers (at most [`MAX_SERVERS`]).
    pub ntp: Vec<Ipv4Addr>,
    /// The server that leased it (its server identifier).
    pub server: Ipv4Addr,
    /// How long the lease lasts from the ACK (bounded by [`MIN_LEASE`] and [`MAX_LEASE`]).
    pub duration: Duration,
    /// When to renew (T1), from the ACK.
    pub renew: Duration,
    /// When to rebind (T2), from the ACK.
    pub rebind: Duration,
}

impl Lease {
    /// The lease a reply offers, checked; `None` if it offers nothing the box can use.
    pub fn from_reply(m: &Message) -> Option<Lease> {
        let address = m.yiaddr();
        if !usable_unicast(address) {
            return None;
        }
        let server = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) if usable_unicast(*s) => *s,
            _ => return None,
        };
        let prefix = match m.opts().get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask)?,
            // RFC 2131 lets a server leave it out; the class's mask is what old clients use.
            _ => match address.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
        };
        let in_subnet = |ip: Ipv4Addr| {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & m == u32::from(address) & m && ip != address
        };
        let router = match m.opts().get(OptionCode::Router) {
            Some(DhcpOption::Router(rs)) => rs
                .iter()
                .copied()
                .find(|r| usable_unicast(*r) && in_subnet(*r)),
            _ => None,
        };
        let servers = |code| -> Vec<Ipv4Addr> {
            let list = match m.opts().get(code) {
                Some(DhcpOption::DomainNameServer(v)) | Some(DhcpOption::NtpServers(v)) => {
                    v.as_slice()
                }
                _ => &[],
            };
            list.iter()
                .copied()
                .filter(|ip| usable_unicast(*ip) || ip.is_loopback())
                .take(MAX_SERVERS)
                .collect()
        };
        let duration = match m.opts().get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(s)) => Duration::from_secs(u64::from(*s)),
            _ => return None,
        }
        .clamp(MIN_LEASE, MAX_LEASE);
        let secs = |code| match m.opts().get(code) {
            Some(DhcpOption::Renewal(s)) | Some(DhcpOption::Rebinding(s)) => {
                Some(Duration::from_secs(u64::from(*s)))
            }
            _ => None,
        };
        // T1 < T2 < lease, whatever the server says (defaults 0.5 and 0.875 of the lease).
        let rebind = secs(OptionCode::Rebinding)
            .filter(|t| *t > Duration::ZERO && *t < duration)
            .unwrap_or(duration * 7 / 8);
        let renew = secs(OptionCode::Renewal)
            .filter(|t| *t > Duration::ZERO && *t < rebind)
            .unwrap_or(rebind.min(duration / 2));
        Some(Lease {
            address,
            prefix,
            router,
            dns: servers(OptionCode::DomainNameServer),
            ntp: servers(OptionCode::NtpServers),
            server,
            duration,
            renew,
            rebind,
        })
    }
}

/// The options the client reads, with their lengths: (code, exact length, or 0 for a
/// non-empty list of 4-byte addresses).
const USED: [(u8, usize); 9] = [
    (1, 4),  // subnet mask
    (3, 0),  // routers
    (6, 0),  // name servers
    (42, 0), // NTP servers
    (51, 4), // lease time
    (53, 1), // message type
    (54, 4), // server identifier
    (58, 4), // T1
    (59, 4), // T2
];

/// The datagram reduced to the fixed header and the options the client reads, each of the
/// right length and kept once (the first); `None` without the magic cookie or with a
/// truncated header. dhcproto is handed only this: its decoder checks neither the cookie nor
/// `hlen` (its `chaddr()` slices by `hlen`), and asserts option lengths (`debug_assert!`,
/// `len - 3`) for options a box never needs, so those never reach it.
fn options_we_use(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.get(236..240) != Some(&dhcproto::v4::MAGIC[..]) {
        return None;
    }
    let mut out = bytes[..240].to_vec();
    let mut seen = [false; 256];
    let mut rest = &bytes[240..];
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            0 => {
                rest = tail;
                continue;
            }
            255 => break,
            _ => {}
        }
        let (&len, tail) = tail.split_first()?;
        let value = tail.get(..usize::from(len))?;
        rest = &tail[usize::from(len)..];
        let fits = USED.iter().any(|&(c, want)| {
            c == code
                && if want == 0 {
                    !value.is_empty() && value.len() % 4 == 0
                } else {
                    value.len() == want
                }
        });
        if fits && !seen[usize::from(code)] {
            seen[usize::from(code)] = true;
            out.extend_from_slice(&[code, len]);
            out.extend_from_slice(value);
        }
    }
    out.push(255);
    Some(out)
}

/// An address a lease, a server or a router may have.
fn usable_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_loopback()
        || ip.octets()[0] == 0
        || ip.octets()[0] >= 240)
}

/// The prefix length of a contiguous mask of 8..=30 bits (a /31 or /32 lease has no room for
/// a router; a mask shorter than /8 is not a subnet a box is put on).
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0 && (8..=30).contains(&ones))
        .then(|| u8::try_from(ones).ok())
        .flatten()
}

/// A datagram to send to a server's port 67.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where: `None` is 255.255.255.255 (out of the client's link).
    pub to: Option<Ipv4Addr>,
    /// The message.
    pub bytes: Vec<u8>,
}

/// What the caller applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lease was acknowledged (a new one, or one renewed or rebound: its address and
    /// options may differ from the last).
    Bound(Lease),
    /// The lease ended (expired, or the server said NAK): remove its address and routes.
    Lost,
}

/// Where the client is (RFC 2131 figure 5).
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nothing sent yet (or starting over).
    Init,
    /// DISCOVER sent; waiting for an OFFER.
    Selecting,
    /// REQUEST sent for an OFFER; waiting for its ACK.
    Requesting { offer: Lease, tries: u32 },
    /// A lease, acquired at `since`.
    Bound { lease: Lease, since: Instant },
    /// Past T1: REQUEST to the server that leased it.
    Renewing { lease: Lease, since: Instant },
    /// Past T2: REQUEST to any server.
    Rebinding { lease: Lease, since: Instant },
    /// Released; nothing more is sent.
    Stopped,
}

/// The DHCP client of one link.
#[derive(Debug)]
pub struct Client {
    mac: [u8; 6],
    hostname: Option<String>,
    state: State,
    xid: u32,
    /// When the next message is due (retransmission or a lease timer).
    due: Instant,
    /// The current retransmission wait.
    backoff: Duration,
    /// When the current exchange began (the `secs` field).
    started: Instant,
}

impl Client {
    /// A client for the link with hardware address `mac`, which sends `hostname` (option 12)
    /// if given. `xid` is the first transaction ID (random: it is what tells our answers from
    /// others'); the next ones follow from it.
    pub fn new(mac: [u8; 6], hostname: Option<String>, xid: u32, now: Instant) -> Client {
        Client {
            mac,
            hostname: hostname.filter(|h| !h.is_empty() && h.len() <= 63 && h.is_ascii()),
            state: State::Init,
            xid,
            due: now,
            backoff: FIRST_RETRANSMIT,
            started: now,
        }
    }

    /// The lease held now (bound, renewing or rebinding).
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// The state's name, for the status (`init`, `selecting`, `requesting`, `bound`,
    /// `renewing`, `rebinding`, `released`).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init => "init",
            State::Selecting => "selecting",
            State::Requesting { .. } => "requesting",
            State::Bound { .. } => "bound",
            State::Renewing { .. } => "renewing",
            State::Rebinding { .. } => "rebinding",
            State::Stopped => "released",
        }
    }

    /// When the lease ends, if one is held.
    pub fn expires(&self) -> Option<Instant> {
        match &self.state {
            State::Bound { lease, since }
            | State::Renewing { lease, since }
            | State::Rebinding { lease, since } => Some(*since + lease.duration),
            _ => None,
        }
    }

    /// When [`Client::poll`] has something to do next.
    pub fn next_due(&self) -> Instant {
        self.due
    }

    /// What is due at `now`: a message to send, and the lease lost if it ran out.
    pub fn poll(&mut self, now: Instant) -> (Option<Outgoing>, Option<Event>) {
        if now < self.due || self.state == State::Stopped {
            return (None, None);
        }
        let mut lost = None;
        if let Some(end) = self.expires()
            && now >= end
        {
            self.state = State::Init;
            lost = Some(Event::Lost);
        }
        let out = match self.state.clone() {
            State::Init | State::Selecting => {
                if self.state == State::Init {
                    self.new_exchange(now);
                    self.state = State::Selecting;
                } else {
                    self.back_off();
                }
                self.due = now + self.backoff;
                self.discover(now)
            }
            State::Requesting { offer, tries } => {
                if tries >= REQUEST_TRIES {
                    self.state = State::Init;
                    self.due = now;
                    return (None, lost);
                }
                self.back_off();
                self.due = now + self.backoff;
                self.state = State::Requesting {
                    offer: offer.clone(),
                    tries: tries + 1,
                };
                self.request(&offer, false, now)
            }
            State::Bound { lease, since } => {
                // T1: renew with the server that leased it.
                self.new_exchange(now);
                self.state = State::Renewing {
                    lease: lease.clone(),
                    since,
                };
                self.due = retry_before(now, since + lease.rebind);
                self.request(&lease, true, now)
            }
            State::Renewing { lease, since } => {
                if now >= since + lease.rebind {
                    self.new_exchange(now);
                    self.state = State::Rebinding {
                        lease: lease.clone(),
                        since,
                    };
                    self.due = retry_before(now, since + lease.duration);
                    self.request(&lease, false, now)
                } else {
                    self.due = retry_before(now, since + lease.rebind);
                    self.request(&lease, true, now)
                }
            }
            State::Rebinding { lease, since } => {
                self.due = retry_before(now, since + lease.duration);
                self.request(&lease, false, now)
            }
            State::Stopped => None,
        };
        (out, lost)
    }

    /// A datagram from port 67 on our link. Anything that is not the answer the state waits
    /// for is ignored (`None`).
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Option<Event> {
        let clean = options_we_use(bytes)?;
        let m = Message::decode(&mut Decoder::new(&clean)).ok()?;
        if m.opcode() != Opcode::BootReply
            || m.xid() != self.xid
            || m.hlen() != 6
            || m.chaddr() != &self.mac[..]
        {
            return None;
        }
        let kind = m.opts().msg_type()?;
        let from = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
            _ => None,
        };
        match (self.state.clone(), kind) {
            (State::Selecting, MessageType::Offer) => {
                let offer = Lease::from_reply(&m)?;
                // Ask for it at once; retransmissions follow from `poll`.
                self.state = State::Requesting { offer, tries: 0 };
                self.backoff = FIRST_RETRANSMIT / 2;
                self.due = now;
                None
            }
            (State::Requesting { offer, .. }, MessageType::Ack) => {
                if from != Some(offer.server) {
                    return None;
                }
                let lease = Lease::from_reply(&m)?;
                Some(self.bind(lease, now))
            }
            (State::Requesting { offer, .. }, MessageType::Nak) => {
                if from != Some(offer.server) {
                    return None;
                }
                self.start_over(now);
                None
            }
            (State::Renewing { lease: old, .. } | State::Rebinding { lease: old, .. }, k) => {
                // Renewing: only the server that leased it; rebinding: any server.
                if matches!(self.state, State::Renewing { .. }) && from != Some(old.server) {
                    return None;
                }
                match k {
                    MessageType::Ack => {
                        let lease = Lease::from_reply(&m)?;
                        Some(self.bind(lease, now))
                    }
                    MessageType::Nak => {
                        self.start_over(now);
                        Some(Event::Lost)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Gives the lease back (RELEASE to its server) and stops; `None` if no lease is held.
    pub fn release(&mut self) -> Option<Outgoing> {
        let lease = self.lease()?.clone();
        self.state = State::Stopped;
        let mut m = self.message(MessageType::Release, self.xid.wrapping_add(1), 0);
        m.set_ciaddr(lease.address);
        m.set_flags(Flags::default());
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server));
        Some(Outgoing {
            to: Some(lease.server),
            bytes: m.to_vec().ok()?,
        })
    }

    fn bind(&mut self, lease: Lease, now: Instant) -> Event {
        self.due = now + lease.renew;
        self.backoff = FIRST_RETRANSMIT;
        self.state = State::Bound {
            lease: lease.clone(),
            since: now,
        };
        Event::Bound(lease)
    }

    fn start_over(&mut self, now: Instant) {
        self.state = State::Init;
        self.backoff = FIRST_RETRANSMIT;
        self.due = now;
    }

    fn new_exchange(&mut self, now: Instant) {
        self.xid = self.xid.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        self.started = now;
        self.backoff = FIRST_RETRANSMIT;
    }

    fn back_off(&mut self) {
        self.backoff = (self.backoff * 2).min(MAX_RETRANSMIT);
    }

    fn message(&self, kind: MessageType, xid: u32, secs: u16) -> Message {
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(
            xid,
            unspecified,
            unspecified,
            unspecified,
            unspecified,
            &self.mac,
        );
        m.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_secs(secs)
            .set_flags(Flags::default().set_broadcast());
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        let mut id = vec![1];
        id.extend_from_slice(&self.mac);
        o.insert(DhcpOption::ClientIdentifier(id));
        if kind != MessageType::Release {
            o.insert(DhcpOption::ParameterRequestList(vec![
                OptionCode::SubnetMask,
                OptionCode::Router,
                OptionCode::DomainNameServer,
                OptionCode::NtpServers,
                OptionCode::AddressLeaseTime,
                OptionCode::Renewal,
                OptionCode::Rebinding,
            ]));
            // Maximum DHCP message size: 576, the least every link carries.
            o.insert(DhcpOption::MaxMessageSize(576));
            if let Some(h) = &self.hostname {
                o.insert(DhcpOption::Hostname(h.clone()));
            }
        }
        m
    }

    fn secs(&self, now: Instant) -> u16 {
        u16::try_from(now.saturating_duration_since(self.started).as_secs()).unwrap_or(u16::MAX)
    }

    fn discover(&self, now: Instant) -> Option<Outgoing> {
        let m = self.message(MessageType::Discover, self.xid, self.secs(now));
        Some(Outgoing {
            to: None,
            bytes: m.to_vec().ok()?,
        })
    }

    /// A REQUEST: for an offer (selecting: requested address and server identifier), or for
    /// a lease held (renewing: unicast to its server; rebinding: broadcast), with `ciaddr`.
    fn request(&self, lease: &Lease, unicast: bool, now: Instant) -> Option<Outgoing> {
        let mut m = self.message(MessageType::Request, self.xid, self.secs(now));
        let held = !matches!(self.state, State::Requesting { .. });
        if held {
            m.set_ciaddr(lease.address);
            m.set_flags(Flags::default());
        } else {
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(lease.address));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(lease.server));
        }
        Some(Outgoing {
            to: unicast.then_some(lease.server),
            bytes: m.to_vec().ok()?,
        })
    }
}

/// The next retransmission while renewing or rebinding: half the time left to `until`, at
/// least 60 s (RFC 2131 §4.4.5), never past `until`.
fn retry_before(now: Instant, until: Instant) -> Instant {
    let left = until.saturating_duration_since(now);
    now + (left / 2).max(Duration::from_secs(60)).min(left)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn decode(b: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(b)).unwrap()
    }

    /// A server's reply to `req` of `kind` leasing `addr`.
    fn reply(req: &Message, kind: MessageType, addr: Ipv4Addr, lease_secs: u32) -> Vec<u8> {
        let mut m = Message::new_with_id(
            req.xid(),
            Ipv4Addr::UNSPECIFIED,
            addr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &req.chaddr()[..6],
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![
            Ipv4Addr::new(203, 0, 113, 1),
            SERVER,
        ]));
        o.insert(DhcpOption::DomainNameServer(vec![
            SERVER,
            Ipv4Addr::BROADCAST,
        ]));
        o.insert(DhcpOption::AddressLeaseTime(lease_secs));
        m.to_vec().unwrap()
    }

    fn bound(c: &mut Client, now: Instant) -> Lease {
        let (out, _) = c.poll(now);
        let discover = decode(&out.unwrap().bytes);
        assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
        assert!(discover.flags().broadcast());
        let addr = Ipv4Addr::new(192, 0, 2, 50);
        assert_eq!(
            c.receive(&reply(&discover, MessageType::Offer, addr, 600), now),
            None
        );
        let (out, _) = c.poll(now);
        let out = out.unwrap();
        assert_eq!(out.to, None);
        let request = decode(&out.bytes);
        assert_eq!(request.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            request.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(addr))
        );
        let Some(Event::Bound(lease)) =
            c.receive(&reply(&request, MessageType::Ack, addr, 600), now)
        else {
            panic!("no lease");
        };
        lease
    }

    #[test]
    fn discover_offer_request_ack_gives_a_checked_lease() {
        let now = Instant::now();
        let mut c = Client::new(MAC, Some("sealgate".into()), 7, now);
        let lease = bound(&mut c, now);
        assert_eq!(lease.address, Ipv4Addr::new(192, 0, 2, 50));
        assert_eq!(lease.prefix, 24);
        // The router outside the subnet is skipped; the broadcast name server too.
        assert_eq!(lease.router, Some(SERVER));
        assert_eq!(lease.dns, vec![SERVER]);
        assert_eq!(lease.renew, Duration::from_secs(300));
        assert_eq!(lease.rebind, Duration::from_secs(525));
        assert_eq!(c.state_name(), "bound");
        assert_eq!(c.poll(now + Duration::from_secs(10)), (None, None));
    }

    #[test]
    fn renews_at_t1_rebinds_at_t2_and_loses_the_lease_at_its_end() {
        let now = Instant::now();
        let mut c = Client::new(MAC, None, 7, now);
        bound(&mut c, now);
        let (out, ev) = c.poll(now + Duration::from_secs(300));
        assert_eq!(ev, None);
        let out = out.unwrap();
        assert_eq!(out.to, Some(SERVER), "renewing is unicast to the server");
        let renew = decode(&out.bytes);
        assert_eq!(renew.ciaddr(), Ipv4Addr::new(192, 0, 2, 50));
        assert_eq!(c.state_name(), "renewing");
        // An ACK from another server is not taken while renewing.
        let mut other = decode(&reply(
            &renew,
            MessageType::Ack,
            Ipv4Addr::new(192, 0, 2, 51),
            600,
        ));
        other
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(
            c.receive(&other.to_vec().unwrap(), now + Duration::from_secs(301)),
            None
        );
        let (out, _) = c.poll(now + Duration::from_secs(525));
        assert_eq!(out.unwrap().to, None, "rebinding is broadcast");
        assert_eq!(c.state_name(), "rebinding");
        let (out, ev) = c.poll(now + Duration::from_secs(600));
        assert_eq!(ev, Some(Event::Lost));
        assert_eq!(
            decode(&out.unwrap().bytes).opts().msg_type(),
            Some(MessageType::Discover)
        );
        assert_eq!(c.lease(), None);
    }

    #[test]
    fn a_renewal_ack_rebinds_and_a_nak_loses_the_lease() {
        let now = Instant::now();
        let mut c = Client::new(MAC, None, 7, now);
        bound(&mut c, now);
        let t1 = now + Duration::from_secs(300);
        let renew = decode(&c.poll(t1).0.unwrap().bytes);
        let addr = Ipv4Addr::new(192, 0, 2, 50);
        assert!(matches!(
            c.receive(&reply(&renew, MessageType::Ack, addr, 600), t1),
            Some(Event::Bound(_))
        ));
        assert_eq!(c.next_due(), t1 + Duration::from_secs(300));
        let renew = decode(&c.poll(t1 + Duration::from_secs(300)).0.unwrap().bytes);
        assert_eq!(
            c.receive(&reply(&renew, MessageType::Nak, addr, 600), t1),
            Some(Event::Lost)
        );
        assert_eq!(c.state_name(), "init");
    }

    #[test]
    fn replies_not_for_us_are_ignored() {
        let now = Instant::now();
        let mut c = Client::new(MAC, None, 7, now);
        let discover = decode(&c.poll(now).0.unwrap().bytes);
        let addr = Ipv4Addr::new(192, 0, 2, 50);
        let good = reply(&discover, MessageType::Offer, addr, 600);
        // Another transaction, another hardware address, a request, an ACK while selecting.
        let mut m = decode(&good);
        m.set_xid(discover.xid() ^ 1);
        assert_eq!(c.receive(&m.to_vec().unwrap(), now), None);
        let mut m = decode(&good);
        m.set_chaddr(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(c.receive(&m.to_vec().unwrap(), now), None);
        let mut m = decode(&good);
        m.set_opcode(Opcode::BootRequest);
        assert_eq!(c.receive(&m.to_vec().unwrap(), now), None);
        assert_eq!(
            c.receive(&reply(&discover, MessageType::Ack, addr, 600), now),
            None
        );
        assert_eq!(c.state_name(), "selecting");
        // Unusable leases: broadcast, loopback, a hole in the mask.
        for bad in [
            Ipv4Addr::BROADCAST,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::UNSPECIFIED,
        ] {
            c.receive(&reply(&discover, MessageType::Offer, bad, 600), now);
            assert_eq!(c.state_name(), "selecting");
        }
        let mut m = decode(&good);
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        c.receive(&m.to_vec().unwrap(), now);
        assert_eq!(c.state_name(), "selecting");
        for junk in [&[][..], &[2u8; 3][..], &good[..good.len() / 2]] {
            assert_eq!(c.receive(junk, now), None);
        }
    }

    #[test]
    fn retransmissions_back_off_and_release_gives_the_lease_back() {
        let now = Instant::now();
        let mut c = Client::new(MAC, None, 7, now);
        c.poll(now);
        assert_eq!(c.next_due(), now + FIRST_RETRANSMIT);
        assert_eq!(c.poll(now + Duration::from_secs(1)), (None, None));
        c.poll(now + FIRST_RETRANSMIT);
        assert_eq!(c.next_due(), now + FIRST_RETRANSMIT * 3);
        let mut c = Client::new(MAC, None, 7, now);
        bound(&mut c, now);
        let out = c.release().unwrap();
        assert_eq!(out.to, Some(SERVER));
        assert_eq!(
            decode(&out.bytes).opts().msg_type(),
            Some(MessageType::Release)
        );
        assert_eq!(c.release(), None);
        assert_eq!(c.poll(now + Duration::from_secs(1000)), (None, None));
    }

    /// A quick stand-in for the fuzz target in the unit tests: mutated OFFERs and ACKs
    /// (every byte, `hlen` and option lengths included) in every state never panic.
    #[test]
    fn mutated_replies_never_panic() {
        let now = Instant::now();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000u32 {
            let mut c = Client::new(MAC, Some("x".into()), 7, now);
            let discover = decode(&c.poll(now).0.unwrap().bytes);
            let addr = Ipv4Addr::new(192, 0, 2, 50);
            let kind = [MessageType::Offer, MessageType::Ack, MessageType::Nak][round as usize % 3];
            if round % 2 == 0 {
                c.receive(&reply(&discover, MessageType::Offer, addr, 600), now);
            }
            let mut b = reply(&discover, kind, addr, 600);
            for _ in 0..1 + next() % 8 {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            if next() % 4 == 0 {
                let n = (next() as usize) % b.len();
                b.truncate(n);
            }
            let _ = c.receive(&b, now);
            let _ = c.poll(now + Duration::from_secs(next() % 1000));
            let _ = c.release();
        }
    }

    #[test]
    fn lease_times_are_bounded() {
        let now = Instant::now();
        let mut c = Client::new(MAC, None, 7, now);
        let discover = decode(&c.poll(now).0.unwrap().bytes);
        let addr = Ipv4Addr::new(192, 0, 2, 50);
        c.receive(&reply(&discover, MessageType::Offer, addr, 1), now);
        let request = decode(&c.poll(now).0.unwrap().bytes);
        let Some(Event::Bound(l)) = c.receive(&reply(&request, MessageType::Ack, addr, 1), now)
        else {
            panic!()
        };
        assert_eq!(l.duration, MIN_LEASE);
        assert!(l.renew < l.rebind && l.rebind < l.duration);
        let m = decode(&reply(&request, MessageType::Ack, addr, u32::MAX));
        assert_eq!(Lease::from_reply(&m).unwrap().duration, MAX_LEASE);
    }
}
