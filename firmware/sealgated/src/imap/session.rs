//! One client session: the client's TLS connection, the primary upstream connection that
//! mirrors it, and (once a decryption is needed) a worker connection for downloads.
//!
//! Attackers: the client (anyone who reaches the listener: before login it can only send
//! commands to the server; after login it acts as the account the server accepted) and the
//! server (its responses are parsed, never trusted for sizes or identity). The key used is
//! chosen only after the server's tagged OK to the client's LOGIN or AUTHENTICATE PLAIN, and
//! only for the vault user whose address is the login name; a PLAIN login that authorizes as
//! someone else never decrypts. For XOAUTH2 and OAUTHBEARER the login name is the one the
//! box's own introspection of the token returns (`oauth.rs`), and only if the request named
//! no one else.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{LiteralMode, Tag};
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{
    Code, Data, Greeting, Response, Status, StatusBody, StatusKind,
};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::{
    AuthenticateDataCodec, CommandCodec, GreetingCodec, IdleDoneCodec, ResponseCodec,
};
use sealgate_smime::cert::Certificate;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::upstream::{self, Connector, Stream};
use super::{CacheKey, Shown, ViewCache};
use crate::audit::AuditLog;
use crate::keys::{Acting, KeyStore};
use imap_codec::imap_types::core::{AString, Literal, Vec1};
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::search::SearchKey;
use sealgate_imap::rewrite::{self, FetchPlan};
use sealgate_imap::search;
use sealgate_imap::view::View;

/// Shared by all sessions.
pub struct Shared {
    pub connector: Connector,
    pub keys: Arc<dyn KeyStore>,
    pub anchors: Arc<Vec<Certificate>>,
    pub audit: Arc<AuditLog>,
    pub workers: Arc<Semaphore>,
    pub cache: ViewCache,
    /// `[imap] encrypt_append`: APPENDs to Sent and Drafts are encrypted to the user.
    pub encrypt_append: bool,
    /// Failed logins and sessions per user.
    pub logins: Arc<super::limits::Logins>,
    /// `[imap.logins]`: login name (lower case) → vault address.
    pub login_map: HashMap<String, String>,
    /// `[imap] oauth_introspection`: who an OAuth session's token belongs to.
    pub oauth: Option<Arc<super::oauth::Introspection>>,
    /// `[imap] junk_feedback`: Junk-folder moves train the spam classifier.
    pub feedback: Option<Arc<super::feedback::Feedback>>,
}

impl Shared {
    /// The vault address whose keys decrypt for `login`: its `[imap.logins]` entry, else
    /// the login name itself when it is an address (lower case); `None` otherwise.
    pub fn vault_address(&self, login: &str) -> Option<String> {
        let l = login.trim().to_lowercase();
        if let Some(a) = self.login_map.get(&l) {
            return Some(a.trim().to_lowercase());
        }
        l.contains('@').then_some(l)
    }
}

type ClientStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The largest message (command with its literals, or response) either side may send.
const MAX_MESSAGE: u32 = 64 * 1024 * 1024;
/// Before login: the largest literal accepted (long OAuth tokens and passwords fit).
const MAX_LITERAL_BEFORE_LOGIN: u32 = 64 * 1024;
/// Before login: the longest a client may stay silent.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// After login (RFC 3501's autologout is at least 30 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(31 * 60);
/// The largest message downloaded for decryption; larger ones are shown as stored.
const MAX_DECRYPT: u32 = 50 * 1024 * 1024;
/// Encrypted messages in one mailbox a content SEARCH decrypts at most (beyond: `NO`).
const MAX_SEARCH_VIEWS: usize = 10_000;
/// The answer to a login while throttled.
const THROTTLED: &str = "[UNAVAILABLE] Too many failed logins; try again later";
/// Usual names of Sent and Drafts mailboxes (the last component, lower case).
const SENT_OR_DRAFTS: &[&str] = &[
    "sent",
    "sent items",
    "sent messages",
    "sent mail",
    "drafts",
    "draft",
];

/// What the client's next message is.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Command,
    AuthData,
    IdleDone,
}

/// A login on its way to the server.
struct PendingLogin {
    tag: Tag<'static>,
    /// The login name, and the password (for the worker connection).
    user: Option<(String, Zeroizing<String>)>,
    /// AUTHENTICATE PLAIN (its data names the identity; an OAuth mechanism's never does).
    plain: bool,
    /// XOAUTH2 or OAUTHBEARER, with the client's message once seen (its token is verified
    /// after the server's OK; the worker connection logs in with it).
    oauth: Option<(AuthMechanism<'static>, Option<Zeroizing<Vec<u8>>>)>,
}

/// How the worker connection logs in: as the client did.
#[derive(Clone)]
enum Credential {
    Password(Zeroizing<String>),
    Sasl {
        mechanism: AuthMechanism<'static>,
        data: Zeroizing<Vec<u8>>,
    },
}

/// The account the server accepted.
struct User {
    login: String,
    credential: Credential,
    /// The vault address whose keys decrypt (the login name, lower case); `None` when the
    /// login is not an address.
    address: Option<String>,
}

struct Selected {
    name: String,
    uidvalidity: Option<u32>,
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    cw: WriteHalf<ClientStream>,
    uw: WriteHalf<Stream>,
    cfr: Fragmentizer,
    ufr: Fragmentizer,
    expect: Expect,
    /// Fragments of a command waiting for the server's continuation (synchronizing literals).
    up_pending: VecDeque<Fragment>,
    /// The tag of that command.
    up_pending_tag: String,
    /// The tag of a running IDLE.
    idle_tag: Option<String>,
    login: Option<PendingLogin>,
    user: Option<User>,
    /// The server accepted a login (with or without a user whose keys decrypt).
    authenticated: bool,
    pending_select: Option<(Tag<'static>, String, Option<u32>)>,
    /// A content SEARCH pipelined behind a SELECT: it waits until the SELECT is answered (its
    /// rewrite needs the selected mailbox); the client's later commands wait behind it.
    deferred: Option<Command<'static>>,
    selected: Option<Selected>,
    plans: HashMap<String, FetchPlan>,
    /// The read-only worker connection (opened on first need), shared with the prefetch.
    worker: SharedWorker,
    /// The background prefetch of the selected mailbox's encrypted messages (cancelled when
    /// dropped: another mailbox selected, or the session's end).
    prefetch: Option<Prefetch>,
    /// COPY and MOVE on their way: tag → destination mailbox (their COPYUID carries the
    /// source messages' cache entries over).
    pending_copy: HashMap<String, String>,
    /// This user's session slot (`[imap] max_sessions_per_user`).
    user_slot: Option<super::limits::UserSlot>,
    /// Mailboxes the server's LIST marked `\Sent` or `\Drafts`.
    special: std::collections::HashSet<String>,
    /// Mailboxes the server's LIST marked `\Junk`, and `\Trash` (Junk-folder feedback).
    junk: std::collections::HashSet<String>,
    trash: std::collections::HashSet<String>,
    /// The server said BYE.
    bye: bool,
    /// Client bytes received since its last complete message (bounds a line that never
    /// ends: the framing buffers it whole).
    since_complete: usize,
}

/// Runs one session until either side ends it.
pub async fn run(
    shared: Arc<Shared>,
    client: ClientStream,
    peer: SocketAddr,
    greet: bool,
) -> anyhow::Result<()> {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (up, greeting) = match shared.connector.connect().await {
        Ok(c) => c,
        Err(e) => {
            let _ = cw
                .write_all(b"* BYE [UNAVAILABLE] The mail server cannot be reached\r\n")
                .await;
            tracing::warn!(%peer, error = %format!("{e:#}"), "imap: the mail server cannot be reached");
            return Ok(());
        }
    };
    let (mut ur, uw) = tokio::io::split(up);
    let mut s = Session {
        shared,
        peer,
        cw,
        uw,
        cfr: Fragmentizer::new(MAX_MESSAGE),
        ufr: Fragmentizer::new(MAX_MESSAGE),
        expect: Expect::Command,
        up_pending: VecDeque::new(),
        up_pending_tag: String::new(),
        idle_tag: None,
        login: None,
        user: None,
        authenticated: false,
        pending_select: None,
        deferred: None,
        selected: None,
        plans: HashMap::new(),
        worker: Arc::new(tokio::sync::Mutex::new(None)),
        prefetch: None,
        special: std::collections::HashSet::new(),
        junk: std::collections::HashSet::new(),
        trash: std::collections::HashSet::new(),
        user_slot: None,
        pending_copy: HashMap::new(),
        bye: false,
        since_complete: 0,
    };
    s.greet(greeting, greet).await?;
    s.cw.flush().await?;
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut ubuf = vec![0u8; 64 * 1024];
    loop {
        let timeout = if s.authenticated {
            IDLE_TIMEOUT
        } else {
            LOGIN_TIMEOUT
        };
        let reading_client = s.up_pending.is_empty() && s.deferred.is_none();
        tokio::select! {
            n = cr.read(&mut cbuf), if reading_client => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                s.since_complete += n;
                let cap = if s.authenticated {
                    MAX_MESSAGE as usize + 64 * 1024
                } else {
                    2 * MAX_LITERAL_BEFORE_LOGIN as usize
                };
                if s.since_complete > cap {
                    let _ = s.cw.write_all(b"* BYE Command too long\r\n").await;
                    let _ = s.cw.flush().await;
                    return Ok(());
                }
                s.cfr.enqueue_bytes(&cbuf[..n]);
                let go_on = s.client_input().await?;
                // TLS keeps what the socket did not take; it must leave before waiting.
                s.cw.flush().await?;
                if !go_on {
                    return Ok(());
                }
            }
            n = ur.read(&mut ubuf) => {
                let n = n?;
                if n == 0 {
                    if !s.bye {
                        let _ = s.cw.write_all(b"* BYE The mail server closed the connection\r\n").await;
                    }
                    let _ = s.cw.shutdown().await;
                    return Ok(());
                }
                s.ufr.enqueue_bytes(&ubuf[..n]);
                let go_on = s.server_input().await?;
                s.cw.flush().await?;
                if !go_on {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(timeout) => {
                let _ = s.cw.write_all(b"* BYE Autologout; idle for too long\r\n").await;
                let _ = s.cw.flush().await;
                return Ok(());
            }
        }
    }
}

fn encode_response(r: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(r).dump()
}

impl Session {
    /// Sends the server's greeting (capabilities filtered); with `show` false (a session
    /// that began with STARTTLS on the proxy's own port, already greeted) only checks it.
    async fn greet(
        &mut self,
        greeting: Option<Greeting<'static>>,
        show: bool,
    ) -> anyhow::Result<()> {
        let g = match greeting {
            Some(mut g) => {
                if let Some(Code::Capability(caps)) = &g.code {
                    g.code = rewrite::filter_caps(caps).map(Code::Capability);
                }
                match g.kind {
                    imap_codec::imap_types::response::GreetingKind::Ok => {}
                    imap_codec::imap_types::response::GreetingKind::PreAuth => {
                        // A session the client never logged in to would decrypt for nobody
                        // the proxy verified: refused.
                        self.cw
                            .write_all(
                                b"* BYE The mail server offers no login (PREAUTH): refused\r\n",
                            )
                            .await?;
                        bail!("the IMAP server greets with PREAUTH");
                    }
                    imap_codec::imap_types::response::GreetingKind::Bye => {}
                }
                GreetingCodec::default().encode(&g).dump()
            }
            None => b"* OK IMAP proxy ready\r\n".to_vec(),
        };
        if show {
            self.cw.write_all(&g).await?;
        }
        Ok(())
    }

    /// Handles every complete client message; false when the session ends.
    async fn client_input(&mut self) -> anyhow::Result<bool> {
        loop {
            if !self.up_pending.is_empty() {
                // A command is waiting for the server's continuation: read no further.
                return Ok(true);
            }
            if let Some(cmd) = self.deferred.take() {
                if self.pending_select.is_some() {
                    self.deferred = Some(cmd);
                    return Ok(true);
                }
                if !self.command(cmd).await? {
                    return Ok(false);
                }
                continue;
            }
            let Some(frag) = self.cfr.progress() else {
                return Ok(true);
            };
            if let FragmentInfo::Line {
                announcement: Some(LiteralAnnouncement { mode, length }),
                ..
            } = frag
            {
                let limit = if self.authenticated {
                    MAX_MESSAGE
                } else {
                    MAX_LITERAL_BEFORE_LOGIN
                };
                if length > limit || self.cfr.is_max_message_size_exceeded() {
                    let tag = self.cfr.decode_tag().map(|t| t.as_ref().to_string());
                    if mode == LiteralMode::Sync {
                        // Refused before the client sends it (RFC 7888's rule).
                        self.cfr.skip_message();
                        let line = format!(
                            "{} BAD [TOOBIG] Literal too large for the proxy\r\n",
                            tag.unwrap_or_else(|| "*".into())
                        );
                        self.cw.write_all(line.as_bytes()).await?;
                        continue;
                    }
                    // A non-synchronizing literal comes anyway: read and refuse it whole.
                    self.cfr.poison_message();
                } else if mode == LiteralMode::Sync && !self.cfr.is_message_complete() {
                    self.cw.write_all(b"+ OK\r\n").await?;
                }
                continue;
            }
            if !self.cfr.is_message_complete() {
                continue;
            }
            self.since_complete = 0;
            match self.expect.clone() {
                Expect::Command => {
                    let decoded = self
                        .cfr
                        .decode_message(&CommandCodec::default())
                        .map(IntoStatic::into_static);
                    match decoded {
                        Ok(cmd) => {
                            if self.pending_select.is_some() && self.searches_views(&cmd) {
                                self.deferred = Some(cmd);
                                continue;
                            }
                            if !self.command(cmd).await? {
                                return Ok(false);
                            }
                        }
                        Err(_) => {
                            let tag = self.cfr.decode_tag().map(|t| t.as_ref().to_string());
                            let line = format!(
                                "{} BAD Command not understood or not supported by the proxy\r\n",
                                tag.unwrap_or_else(|| "*".into())
                            );
                            self.cw.write_all(line.as_bytes()).await?;
                        }
                    }
                }
                Expect::AuthData => {
                    let decoded = self
                        .cfr
                        .decode_message(&AuthenticateDataCodec::default())
                        .map(IntoStatic::into_static);
                    match decoded {
                        Ok(data) => {
                            if let AuthenticateData::Continue(d) = &data
                                && let Some(l) = self.login.as_mut()
                                && l.plain
                                && l.user.is_none()
                            {
                                l.user = plain_identity(d.declassify());
                            }
                            if let AuthenticateData::Continue(d) = &data
                                && let Some(l) = self.login.as_mut()
                                && let Some((_, sasl @ None)) = l.oauth.as_mut()
                                && !d.declassify().is_empty()
                            {
                                *sasl = Some(Zeroizing::new(d.declassify().to_vec()));
                            }
                            let throttled = self.login.as_ref().is_some_and(|l| {
                                l.user.as_ref().is_some_and(|(u, _)| {
                                    self.shared.logins.throttled(self.peer.ip(), Some(u))
                                })
                            });
                            if throttled {
                                // Cancelled: the password never reaches the server.
                                self.uw.write_all(b"*\r\n").await?;
                            } else {
                                let bytes = AuthenticateDataCodec::default().encode(&data).dump();
                                self.uw.write_all(&bytes).await?;
                            }
                        }
                        Err(_) => {
                            // Not base64: cancel the exchange at the server.
                            self.uw.write_all(b"*\r\n").await?;
                        }
                    }
                }
                Expect::IdleDone => {
                    match self.cfr.decode_message(&IdleDoneCodec::default()) {
                        Ok(done) => {
                            let bytes = IdleDoneCodec::default().encode(&done).dump();
                            self.uw.write_all(&bytes).await?;
                        }
                        Err(_) => {
                            // RFC 2177: anything but DONE ends IDLE badly; end it cleanly.
                            self.uw.write_all(b"DONE\r\n").await?;
                        }
                    }
                    self.expect = Expect::Command;
                }
            }
        }
    }

    /// Whether `cmd` is a SEARCH the proxy answers over the decrypted views.
    fn searches_views(&self, cmd: &Command<'_>) -> bool {
        self.user.is_some()
            && matches!(&cmd.body, CommandBody::Search { criteria, .. } if search::needs_views(criteria.as_ref()))
    }

    /// One client command; false when the session ends.
    async fn command(&mut self, mut cmd: Command<'static>) -> anyhow::Result<bool> {
        let tag = cmd.tag.as_ref().to_string();
        let refuse = |kind: &str, text: &str| format!("{tag} {kind} {text}\r\n");
        match &mut cmd.body {
            CommandBody::StartTLS => {
                self.cw
                    .write_all(refuse("BAD", "The connection is already TLS").as_bytes())
                    .await?;
                return Ok(true);
            }
            CommandBody::Compress { .. } => {
                self.cw
                    .write_all(refuse("NO", "COMPRESS is not offered").as_bytes())
                    .await?;
                return Ok(true);
            }
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let pass = Zeroizing::new(
                    String::from_utf8_lossy(password.declassify().as_ref()).into_owned(),
                );
                if self.shared.logins.throttled(self.peer.ip(), Some(&user)) {
                    self.cw
                        .write_all(refuse("NO", THROTTLED).as_bytes())
                        .await?;
                    return Ok(true);
                }
                self.login = Some(PendingLogin {
                    tag: cmd.tag.clone(),
                    user: Some((user, pass)),
                    plain: false,
                    oauth: None,
                });
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let plain = *mechanism == AuthMechanism::Plain;
                let oauth = matches!(
                    mechanism,
                    AuthMechanism::XOAuth2 | AuthMechanism::OAuthBearer
                );
                if !plain && !oauth {
                    self.cw
                        .write_all(
                            refuse("NO", "Only PLAIN, XOAUTH2 and OAUTHBEARER are offered")
                                .as_bytes(),
                        )
                        .await?;
                    return Ok(true);
                }
                // An OAuth request's user name proves nothing (the token decides who logs
                // in): such a session reads mail as stored, never decrypted.
                let user = initial_response
                    .as_ref()
                    .filter(|_| plain)
                    .and_then(|r| plain_identity(r.declassify()));
                if self
                    .shared
                    .logins
                    .throttled(self.peer.ip(), user.as_ref().map(|(u, _)| u.as_str()))
                {
                    self.cw
                        .write_all(refuse("NO", THROTTLED).as_bytes())
                        .await?;
                    return Ok(true);
                }
                if initial_response.is_none() {
                    self.expect = Expect::AuthData;
                }
                let oauth = oauth.then(|| {
                    (
                        mechanism.clone(),
                        initial_response
                            .as_ref()
                            .map(|r| Zeroizing::new(r.declassify().to_vec())),
                    )
                });
                self.login = Some(PendingLogin {
                    tag: cmd.tag.clone(),
                    user,
                    plain,
                    oauth,
                });
            }
            CommandBody::Enable { capabilities } => match rewrite::filter_enable(capabilities) {
                Some(c) => *capabilities = c,
                None => {
                    self.cw.write_all(b"* ENABLED\r\n").await?;
                    self.cw
                        .write_all(refuse("OK", "ENABLE completed").as_bytes())
                        .await?;
                    return Ok(true);
                }
            },
            CommandBody::Select { mailbox, .. } | CommandBody::Examine { mailbox, .. } => {
                self.selected = None;
                self.prefetch = None;
                self.pending_select = Some((cmd.tag.clone(), mailbox_name(mailbox), None));
            }
            CommandBody::Copy { mailbox, .. } | CommandBody::Move { mailbox, .. }
                if self.user.is_some()
                    && self.selected.is_some()
                    && self.pending_copy.len() < 64 =>
            {
                self.pending_copy.insert(tag.clone(), mailbox_name(mailbox));
            }
            CommandBody::Close | CommandBody::Unselect => {
                self.selected = None;
                self.prefetch = None;
            }
            CommandBody::Logout => {
                self.prefetch = None;
            }
            CommandBody::Idle => {
                self.expect = Expect::IdleDone;
                self.idle_tag = Some(tag.clone());
            }
            CommandBody::Append {
                mailbox, message, ..
            } if self.shared.encrypt_append
                && self.user.as_ref().is_some_and(|u| u.address.is_some())
                && self.is_sent_or_drafts(&mailbox_name(mailbox)) =>
            {
                let data = match message {
                    LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                let name = mailbox_name(mailbox);
                match self.encrypt_append(&name, data).await {
                    Ok(Some(enc)) => match Literal::try_from(enc) {
                        Ok(l) => *message = LiteralOrLiteral8::Literal(l),
                        Err(_) => {
                            self.cw
                                .write_all(
                                    refuse("NO", "[CANNOT] The message cannot be encrypted")
                                        .as_bytes(),
                                )
                                .await?;
                            return Ok(true);
                        }
                    },
                    Ok(None) => {}
                    Err(why) => {
                        // Nothing reaches the server in cleartext.
                        let text =
                            format!("[CANNOT] The message cannot be encrypted ({why}); not stored");
                        self.cw.write_all(refuse("NO", &text).as_bytes()).await?;
                        return Ok(true);
                    }
                }
            }
            CommandBody::Search { criteria, .. }
                if self.user.is_some()
                    && self.selected.is_some()
                    && search::needs_views(criteria.as_ref()) =>
            {
                match self.search_views().await {
                    Ok(views) => search::rewrite(criteria, &views),
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, error = %format!("{e:#}"), "imap: search over decrypted messages failed");
                        *self.worker.lock().await = None;
                        self.cw
                            .write_all(
                                refuse(
                                    "NO",
                                    "[UNAVAILABLE] Searching the decrypted messages is not possible now",
                                )
                                .as_bytes(),
                            )
                            .await?;
                        return Ok(true);
                    }
                }
            }
            CommandBody::Fetch {
                macro_or_item_names,
                ..
            } if rewrite::asks_binary_partial(macro_or_item_names) => {
                self.cw
                    .write_all(
                        refuse("BAD", "Partial BINARY fetches are not offered by the proxy")
                            .as_bytes(),
                    )
                    .await?;
                return Ok(true);
            }
            CommandBody::Fetch {
                macro_or_item_names,
                uid,
                ..
            } => {
                // A FETCH pipelined behind a SELECT is answered after it: planned too.
                if self.user.is_some()
                    && (self.selected.is_some() || self.pending_select.is_some())
                    && let Some(plan) = rewrite::plan_fetch(macro_or_item_names, *uid)
                {
                    self.plans.insert(tag.clone(), plan);
                }
            }
            _ => {}
        }
        self.send_upstream(&cmd).await?;
        Ok(true)
    }

    /// Writes a command to the server; synchronizing literals wait for its continuation.
    async fn send_upstream(&mut self, cmd: &Command<'_>) -> anyhow::Result<()> {
        let mut frags: VecDeque<Fragment> = CommandCodec::default().encode(cmd).collect();
        // Every literal goes as a synchronizing one (every server takes those).
        let mut out = VecDeque::new();
        while let Some(f) = frags.pop_front() {
            match f {
                Fragment::Literal {
                    data,
                    mode: LiteralMode::NonSync,
                } => {
                    if let Some(Fragment::Line { data: line }) = out.back_mut() {
                        make_sync(line);
                    }
                    out.push_back(Fragment::Literal {
                        data,
                        mode: LiteralMode::Sync,
                    });
                }
                f => out.push_back(f),
            }
        }
        self.up_pending = out;
        self.up_pending_tag = cmd.tag.as_ref().to_string();
        self.write_pending().await
    }

    /// Writes pending fragments up to (not including) the next synchronizing literal.
    async fn write_pending(&mut self) -> anyhow::Result<()> {
        while let Some(f) = self.up_pending.front() {
            match f {
                Fragment::Line { data } => {
                    self.uw.write_all(data).await?;
                    self.up_pending.pop_front();
                }
                Fragment::Literal { .. } => break,
            }
        }
        self.uw.flush().await?;
        Ok(())
    }

    /// Handles every complete server message; false when the session ends.
    async fn server_input(&mut self) -> anyhow::Result<bool> {
        loop {
            let Some(_) = self.ufr.progress() else {
                return Ok(true);
            };
            if !self.ufr.is_message_complete() {
                continue;
            }
            let resp = match self
                .ufr
                .decode_message(&ResponseCodec::default())
                .map(IntoStatic::into_static)
            {
                Ok(r) => r,
                Err(_) => {
                    // Passing on what does not parse could desynchronise the client.
                    self.cw
                        .write_all(
                            b"* BYE The mail server sent a response the proxy cannot read\r\n",
                        )
                        .await?;
                    tracing::warn!(peer = %self.peer, "imap: unparsable response from the server");
                    return Ok(false);
                }
            };
            if !self.response(resp).await? {
                return Ok(false);
            }
            // A command that waited for a continuation may let the client go on.
            if self.up_pending.is_empty() && !self.client_input().await? {
                return Ok(false);
            }
        }
    }

    async fn response(&mut self, mut resp: Response<'static>) -> anyhow::Result<bool> {
        match &mut resp {
            Response::CommandContinuationRequest(_) if !self.up_pending.is_empty() => {
                if let Some(Fragment::Literal { data, .. }) = self.up_pending.pop_front() {
                    self.uw.write_all(&data).await?;
                }
                self.write_pending().await?;
                return Ok(true);
            }
            Response::Data(Data::Capability(caps)) => match rewrite::filter_caps(caps) {
                Some(c) => *caps = c,
                None => return Ok(true),
            },
            Response::Data(Data::List { items, mailbox, .. }) => {
                for a in items.iter() {
                    let set = match a.to_string().to_ascii_lowercase().as_str() {
                        "\\sent" | "\\drafts" => &mut self.special,
                        "\\junk" => &mut self.junk,
                        "\\trash" => &mut self.trash,
                        _ => continue,
                    };
                    if set.len() < 1000 {
                        set.insert(mailbox_name(mailbox));
                    }
                }
            }
            Response::Data(Data::Fetch { items, .. }) if !self.plans.is_empty() => {
                self.rewrite_fetch(items).await;
            }
            Response::Status(Status::Untagged(body)) => {
                filter_code(body);
                // MOVE reports COPYUID in an untagged OK (RFC 6851).
                if let Some(Code::CopyUid {
                    uid_validity,
                    source,
                    destination,
                }) = &body.code
                    && self.pending_copy.len() == 1
                    && let Some(dest) = self.pending_copy.values().next().cloned()
                {
                    self.carry_over(&dest, uid_validity.get(), source, destination)
                        .await;
                    self.junk_feedback(&dest, uid_validity.get(), destination);
                }
                if let (Some(Code::UidValidity(v)), Some(p)) =
                    (&body.code, self.pending_select.as_mut())
                {
                    p.2 = Some(v.get());
                }
            }
            Response::Status(Status::Tagged(t)) => {
                filter_code(&mut t.body);
                let tag = t.tag.as_ref().to_string();
                if let Some(dest) = self.pending_copy.remove(&tag)
                    && t.body.kind == StatusKind::Ok
                    && let Some(Code::CopyUid {
                        uid_validity,
                        source,
                        destination,
                    }) = &t.body.code
                {
                    self.carry_over(&dest, uid_validity.get(), source, destination)
                        .await;
                    self.junk_feedback(&dest, uid_validity.get(), destination);
                }
                self.plans.remove(&tag);
                // A command refused before all its literals were sent: the rest is dropped.
                if !self.up_pending.is_empty() && self.up_pending_tag == tag {
                    self.up_pending.clear();
                }
                // An IDLE the server refused or ended: the client's next line is a command.
                if self.idle_tag.as_deref() == Some(tag.as_str()) {
                    self.idle_tag = None;
                    if self.expect == Expect::IdleDone {
                        self.expect = Expect::Command;
                    }
                }
                if self.login.as_ref().is_some_and(|l| l.tag.as_ref() == tag) {
                    let l = self.login.take();
                    if self.expect == Expect::AuthData {
                        self.expect = Expect::Command;
                    }
                    let (claimed, oauth) = match l {
                        Some(l) => (l.user, l.oauth),
                        None => (None, None),
                    };
                    if t.body.kind == StatusKind::Ok {
                        self.authenticated = true;
                    }
                    let verified = if t.body.kind != StatusKind::Ok {
                        self.shared
                            .logins
                            .failed(self.peer.ip(), claimed.as_ref().map(|(u, _)| u.as_str()));
                        None
                    } else if let Some((mechanism, Some(data))) = oauth {
                        self.oauth_identity(mechanism, data).await
                    } else {
                        claimed.map(|(u, p)| (u, Credential::Password(p)))
                    };
                    if let Some((login, credential)) = verified {
                        let Some(slot) = self.shared.logins.take_user(&login) else {
                            tracing::info!(peer = %self.peer, "imap: too many sessions for one user");
                            let line = format!(
                                "* BYE Too many sessions for this user\r\n{tag} NO [LIMIT] Too many sessions for this user\r\n"
                            );
                            self.cw.write_all(line.as_bytes()).await?;
                            return Ok(false);
                        };
                        self.user_slot = Some(slot);
                        let address = self.shared.vault_address(&login);
                        self.user = Some(User {
                            login,
                            credential,
                            address,
                        });
                    }
                }
                if self
                    .pending_select
                    .as_ref()
                    .is_some_and(|p| p.0.as_ref() == tag)
                    && let Some((_, name, uidvalidity)) = self.pending_select.take()
                    && t.body.kind == StatusKind::Ok
                {
                    // A new UIDVALIDITY: what was kept for the old one names other messages.
                    if let (Some(v), Some(u)) = (uidvalidity, self.user.as_ref()) {
                        let shared = self.shared.clone();
                        let account = u.login.to_ascii_lowercase();
                        let mailbox = name.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            shared.cache.retain_uidvalidity(&account, &mailbox, v)
                        })
                        .await;
                    }
                    self.selected = Some(Selected { name, uidvalidity });
                    self.start_prefetch();
                }
            }
            Response::Status(Status::Bye(_)) => {
                // The tagged answer (to LOGOUT) may still follow; the session ends when the
                // server closes.
                self.bye = true;
            }
            _ => {}
        }
        let bytes = encode_response(&resp);
        self.cw.write_all(&bytes).await?;
        Ok(true)
    }

    async fn rewrite_fetch(
        &mut self,
        items: &mut imap_codec::imap_types::core::Vec1<MessageDataItem<'static>>,
    ) {
        let mut list: Vec<MessageDataItem<'static>> = items.as_ref().to_vec();
        let added_uid = self.plans.values().all(|p| p.added_uid);
        let Some(probed) = rewrite::take_probe(&mut list, added_uid) else {
            return;
        };
        let mut plan = FetchPlan::default();
        for p in self.plans.values() {
            plan.partials
                .extend(p.partials.iter().map(|(k, v)| (k.clone(), *v)));
        }
        if probed.encrypted
            && let Some(uid) = probed.uid
            && let Some(shown) = self.shown(uid.get()).await
            && let Shown::View(v) = shown.as_ref()
        {
            rewrite::answer_from_view(&mut list, v, &plan);
        }
        if let Ok(v) = imap_codec::imap_types::core::Vec1::try_from(list) {
            *items = v;
        }
    }

    /// The account an OAuth login belongs to, as the box verified it (its token introspected
    /// at `[imap] oauth_introspection`), with what the worker connection logs in with;
    /// `None` (the session reads mail as stored) without an endpoint, when the token is not
    /// confirmed, or when the request names another account than the token's owner (a
    /// shared mailbox or a server that ignores the name: never someone else's keys).
    async fn oauth_identity(
        &self,
        mechanism: AuthMechanism<'static>,
        data: Zeroizing<Vec<u8>>,
    ) -> Option<(String, Credential)> {
        let intro = self.shared.oauth.clone()?;
        let request = match mechanism {
            AuthMechanism::XOAuth2 => super::oauth::xoauth2(&data),
            AuthMechanism::OAuthBearer => super::oauth::oauthbearer(&data),
            _ => None,
        }?;
        match intro.identity(&request.token).await {
            Ok(owner) => {
                if let Some(named) = &request.name
                    && named.trim().to_lowercase() != owner
                {
                    tracing::warn!(peer = %self.peer, "imap: an OAuth login names another account than its token's owner; its mail is shown as stored");
                    return None;
                }
                Some((owner, Credential::Sasl { mechanism, data }))
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %format!("{e:#}"), "imap: the OAuth token is not confirmed; its mail is shown as stored");
                None
            }
        }
    }

    /// What the message `uid` of the selected mailbox is shown as: from the cache, else
    /// downloaded and decrypted. `None` when it cannot be known now (shown as stored, not
    /// remembered).
    async fn shown(&mut self, uid: u32) -> Option<Arc<Shown>> {
        let user = self.user.as_ref()?;
        let sel = self.selected.as_ref()?;
        let uidvalidity = sel.uidvalidity?;
        let key: CacheKey = (
            user.login.to_ascii_lowercase(),
            sel.name.clone(),
            uidvalidity,
            uid,
        );
        let Some(address) = user.address.clone() else {
            return Some(Arc::new(Shown::Stored));
        };
        if let Some(s) = self.cached(&key).await {
            return Some(s);
        }
        let login = user.login.clone();
        let mailbox = sel.name.clone();
        let credential = user.credential.clone();
        // One message at a time on the worker connection, from the download to the cache
        // (the prefetch does the same): a message is decrypted once.
        let mut g = self.worker.clone().lock_owned().await;
        if let Some(s) = self.cached(&key).await {
            return Some(s);
        }
        let downloaded = async {
            if g.is_none() {
                *g = Some(Worker::login(&self.shared.connector, &login, &credential).await?);
            }
            match g.as_mut() {
                Some(w) => w.fetch_from(&mailbox, uidvalidity, uid).await,
                None => Ok(None),
            }
        }
        .await;
        let message = match downloaded {
            Ok(Some(m)) => m,
            Ok(None) => {
                let s = Arc::new(Shown::Stored);
                self.keep(key, s.clone()).await;
                return Some(s);
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "imap: download for decryption failed");
                *g = None;
                return None;
            }
        };
        let shared = self.shared.clone();
        let peer = self.peer.to_string();
        let permit = shared.workers.clone().acquire_owned().await.ok()?;
        let shown = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            decrypt(
                &shared,
                &login,
                &address,
                &mailbox,
                uidvalidity,
                uid,
                &peer,
                &message,
            )
        })
        .await
        .ok()?;
        let s = Arc::new(shown);
        self.keep(key, s.clone()).await;
        drop(g);
        Some(s)
    }

    /// The cached entry for `key` (memory, else the disk: read off the async threads).
    async fn cached(&self, key: &CacheKey) -> Option<Arc<Shown>> {
        let shared = self.shared.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || shared.cache.get(&key))
            .await
            .ok()
            .flatten()
    }

    /// Keeps what `key` is shown as (memory and disk).
    async fn keep(&self, key: CacheKey, s: Arc<Shown>) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.cache.put(key, s)).await;
    }

    /// A COPY or MOVE the server confirmed (`COPYUID`): what each source message is shown
    /// as is kept for its copy too (the same stored bytes, so the same view), so a copied
    /// message is not downloaded and decrypted again.
    async fn carry_over(
        &self,
        dest: &str,
        dest_uidvalidity: u32,
        source: &imap_codec::imap_types::extensions::uidplus::UidSet,
        destination: &imap_codec::imap_types::extensions::uidplus::UidSet,
    ) {
        let (Some(user), Some(sel)) = (self.user.as_ref(), self.selected.as_ref()) else {
            return;
        };
        let Some(src_uv) = sel.uidvalidity else {
            return;
        };
        let (src, dst) = (expand_uids(source), expand_uids(destination));
        if src.len() != dst.len() {
            return;
        }
        let account = user.login.to_ascii_lowercase();
        let from_box = sel.name.clone();
        let dest = dest.to_string();
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (s, d) in src.into_iter().zip(dst) {
                let from: CacheKey = (account.clone(), from_box.clone(), src_uv, s);
                if let Some(shown) = shared.cache.get(&from) {
                    shared
                        .cache
                        .put((account.clone(), dest.clone(), dest_uidvalidity, d), shown);
                }
            }
        })
        .await;
    }

    /// A COPY or MOVE the server confirmed (`COPYUID`) into or out of a Junk folder: its
    /// copies (`destination` in `dest`) are downloaded and counted as spam or ham off the
    /// session's path (`feedback.rs`).
    fn junk_feedback(
        &self,
        dest: &str,
        dest_uidvalidity: u32,
        destination: &imap_codec::imap_types::extensions::uidplus::UidSet,
    ) {
        let Some(fb) = self.shared.feedback.clone() else {
            return;
        };
        let (Some(user), Some(sel)) = (self.user.as_ref(), self.selected.as_ref()) else {
            return;
        };
        let Some(spam) = fb.class(&sel.name, dest, &self.junk, &self.trash) else {
            return;
        };
        let mut uids = expand_uids(destination);
        let moved = uids.len();
        uids.truncate(super::feedback::MAX_PER_COMMAND);
        let allowed = fb.allow(&user.login, uids.len());
        uids.truncate(allowed);
        let class = if spam { "spam" } else { "ham" };
        let operation = format!("imap-feedback {class} {} -> {dest}", sel.name);
        let peer = self.peer.to_string();
        let client = format!("imap:{}", user.login);
        if uids.is_empty() {
            self.shared.audit.record(
                &client,
                &peer,
                &operation,
                None,
                &format!("limit: 0 of {moved} counted"),
                200,
                Duration::ZERO,
            );
            return;
        }
        let shared = self.shared.clone();
        let worker = self.worker.clone();
        let login = user.login.clone();
        let credential = user.credential.clone();
        let address = user.address.clone();
        let dest = dest.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut messages = Vec::new();
            let mut skipped: HashMap<&'static str, usize> = HashMap::new();
            skipped.insert("limit", moved - uids.len());
            for uid in uids {
                let raw = {
                    let mut g = worker.clone().lock_owned().await;
                    let got = async {
                        if g.is_none() {
                            *g = Some(Worker::login(&shared.connector, &login, &credential).await?);
                        }
                        match g.as_mut() {
                            Some(w) => w.fetch_from(&dest, dest_uidvalidity, uid).await,
                            None => Ok(None),
                        }
                    }
                    .await;
                    if got.is_err() {
                        *g = None;
                    }
                    got
                };
                let raw = match raw {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        *skipped.entry("gone-or-too-large").or_default() += 1;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %format!("{e:#}"), "imap: download for Junk feedback failed");
                        *skipped.entry("download-failed").or_default() += 1;
                        continue;
                    }
                };
                let Ok(permit) = shared.workers.clone().acquire_owned().await else {
                    return;
                };
                let s = shared.clone();
                let (l, a, p) = (login.clone(), address.clone(), peer.clone());
                let content = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    super::feedback::content(
                        s.keys.as_ref(),
                        &s.anchors,
                        crate::keys::actor("imap-feedback", &l, &p),
                        a.as_deref(),
                        &raw,
                    )
                })
                .await
                .unwrap_or(Err("failed"));
                match content {
                    Ok(c) => messages.push(c),
                    Err(why) => *skipped.entry(why).or_default() += 1,
                }
            }
            let n = messages.len();
            let fb2 = fb.clone();
            let trained = tokio::task::spawn_blocking(move || {
                fb2.train(&messages, spam).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("the training failed".to_string()));
            let mut outcome = match &trained {
                Ok(t) => format!(
                    "counted {} of {n} (changed class {}); local layer spam={} ham={}",
                    t.counted, t.changed, t.spam, t.ham
                ),
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "imap: Junk feedback not counted");
                    format!("failed: {e}")
                }
            };
            let mut why: Vec<_> = skipped.into_iter().filter(|(_, k)| *k > 0).collect();
            why.sort_unstable();
            for (w, k) in why {
                outcome.push_str(&format!("; skipped {k} {w}"));
            }
            shared.audit.record(
                &client,
                &peer,
                &operation,
                None,
                &outcome,
                if trained.is_ok() { 200 } else { 500 },
                started.elapsed(),
            );
        });
    }

    /// Whether APPENDs to `name` are encrypted: a mailbox the server's LIST marked `\Sent`
    /// or `\Drafts`, or whose last name component is a usual name for one.
    fn is_sent_or_drafts(&self, name: &str) -> bool {
        if self.special.contains(name) {
            return true;
        }
        let last = name
            .rsplit(['/', '.'])
            .next()
            .unwrap_or(name)
            .to_lowercase();
        SENT_OR_DRAFTS.contains(&last.as_str())
    }

    /// `message` encrypted to the user's own certificate (AES-256-GCM, the header fields
    /// kept outside so the client finds it by Message-ID). `Ok(None)`: stored as it is
    /// (already encrypted, S/MIME or PGP, or the box holds no certificate of this user, so
    /// it decrypts nothing for them either); `Err`: refused (why).
    async fn encrypt_append(
        &self,
        mailbox: &str,
        message: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, String> {
        let Some(user) = self.user.as_ref() else {
            return Ok(None);
        };
        let Some(address) = user.address.clone() else {
            return Ok(None);
        };
        let ct = sealgate_imap::view::header_value(
            &sealgate_imap::view::crlf(
                &message[..message
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(message.len(), |i| i + 4)],
            ),
            b"content-type",
        )
        .unwrap_or_default();
        if rewrite::is_encrypted_type(&ct)
            || ct
                .trim()
                .to_ascii_lowercase()
                .starts_with("multipart/encrypted")
        {
            return Ok(None);
        }
        let shared = self.shared.clone();
        let login = user.login.clone();
        let peer = self.peer.to_string();
        let mailbox = mailbox.to_string();
        let permit = shared
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "shutting down".to_string())?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let cert = match shared.keys.certificates(&address) {
                Ok((Some(c), _)) => c,
                Ok((None, _)) => return Ok(None),
                Err(e) => return Err(format!("the vault: {e}")),
            };
            let out = sealgate_smime::envelope::Recipient::new(cert)
                .and_then(|r| {
                    sealgate_smime::message::encrypt_message(
                        &message,
                        &[r],
                        sealgate_smime::crypto::CipherChoice::Aes256Gcm,
                    )
                })
                .map_err(|e| e.to_string());
            shared.audit.record(
                &format!("imap:{login}"),
                &peer,
                &format!("imap-append-encrypt {mailbox}"),
                crate::docking::message_id(&message),
                if out.is_ok() { "encrypted" } else { "failed" },
                200,
                started.elapsed(),
            );
            out.map(Some)
        })
        .await
        .map_err(|_| "the encryption did not finish".to_string())?
    }

    /// The messages of the selected mailbox shown decrypted, with their searchable text:
    /// the server's encrypted ones (a header search on the worker connection, the mailbox
    /// examined afresh so new mail counts), each decrypted or taken from the cache.
    async fn search_views(&mut self) -> anyhow::Result<Vec<(u32, search::Searchable)>> {
        let Some(user) = self.user.as_ref() else {
            return Ok(Vec::new());
        };
        if user.address.is_none() {
            return Ok(Vec::new());
        }
        let credential = user.credential.clone();
        let login = user.login.clone();
        let Some((mailbox, uidvalidity)) = self
            .selected
            .as_ref()
            .map(|s| (s.name.clone(), s.uidvalidity))
        else {
            return Ok(Vec::new());
        };
        let uids = {
            let mut g = self.worker.lock().await;
            if g.is_none() {
                *g = Some(Worker::login(&self.shared.connector, &login, &credential).await?);
            }
            let Some(w) = g.as_mut() else {
                return Ok(Vec::new());
            };
            w.examine(&mailbox).await?;
            if uidvalidity.is_none() || w.selected.as_ref().map(|(_, v)| *v) != Some(uidvalidity) {
                bail!("the mailbox changed under the session");
            }
            w.encrypted_uids().await?
        };
        if uids.len() > MAX_SEARCH_VIEWS {
            bail!(
                "{} encrypted messages: more than a search decrypts",
                uids.len()
            );
        }
        let mut views = Vec::new();
        for uid in uids {
            if let Some(shown) = self.shown(uid).await
                && let Shown::View(v) = shown.as_ref()
            {
                views.push((uid, search::Searchable::new(v)));
            }
        }
        Ok(views)
    }

    /// Starts prefetching the encrypted messages of the mailbox just selected (the previous
    /// prefetch, if any, is cancelled).
    fn start_prefetch(&mut self) {
        self.prefetch = None;
        let (Some(user), Some(sel)) = (self.user.as_ref(), self.selected.as_ref()) else {
            return;
        };
        let (Some(address), Some(uidvalidity)) = (user.address.clone(), sel.uidvalidity) else {
            return;
        };
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let job = PrefetchJob {
            shared: self.shared.clone(),
            worker: self.worker.clone(),
            cancel: cancel.clone(),
            peer: self.peer.to_string(),
            login: user.login.clone(),
            address,
            credential: user.credential.clone(),
            mailbox: sel.name.clone(),
            uidvalidity,
        };
        tokio::spawn(job.run());
        self.prefetch = Some(Prefetch { cancel });
    }
}

/// The worker connection, shared by the session and its prefetch (one command at a time).
type SharedWorker = Arc<tokio::sync::Mutex<Option<Worker>>>;

/// Encrypted messages one prefetch decrypts at most (newest first).
const MAX_PREFETCH: usize = 10_000;

/// A running prefetch; dropping it cancels it (the message in progress is finished).
struct Prefetch {
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Decrypts a mailbox's encrypted messages ahead of the client, newest first, on the worker
/// connection (read-only: `EXAMINE`, `UID SEARCH HEADER Content-Type pkcs7-mime`, `UID
/// FETCH n BODY.PEEK[]`), so a listing's `RFC822.SIZE` and `BODYSTRUCTURE` come from the
/// cache. Bounded: [`MAX_PREFETCH`] messages, one download at a time, decryptions under the
/// shared crypto-worker permits; stops at the first error (the client's own FETCH still
/// decrypts what it needs).
struct PrefetchJob {
    shared: Arc<Shared>,
    worker: SharedWorker,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    peer: String,
    login: String,
    address: String,
    credential: Credential,
    mailbox: String,
    uidvalidity: u32,
}

impl PrefetchJob {
    fn cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn run(self) {
        // A user with no certificate in the vault decrypts nothing: nothing to fetch.
        let (shared, address) = (self.shared.clone(), self.address.clone());
        let has_key = tokio::task::spawn_blocking(move || {
            matches!(shared.keys.certificates(&address), Ok((Some(_), _)))
        })
        .await
        .unwrap_or(false);
        if !has_key {
            return;
        }
        let Some(mut uids) = self.encrypted().await else {
            return;
        };
        uids.sort_unstable_by(|a, b| b.cmp(a));
        uids.truncate(MAX_PREFETCH);
        for uid in uids {
            if self.cancelled() {
                return;
            }
            let key: CacheKey = (
                self.login.to_ascii_lowercase(),
                self.mailbox.clone(),
                self.uidvalidity,
                uid,
            );
            // One message at a time on the worker connection, from the download to the
            // cache (the session's own FETCH does the same): a message is decrypted once.
            let mut g = self.worker.lock().await;
            if self.cancelled() {
                return;
            }
            let (shared, k) = (self.shared.clone(), key.clone());
            if tokio::task::spawn_blocking(move || shared.cache.contains(&k))
                .await
                .unwrap_or(true)
            {
                continue;
            }
            let Some(w) = g.as_mut() else {
                return;
            };
            let message = match w.fetch_from(&self.mailbox, self.uidvalidity, uid).await {
                Ok(m) => m,
                Err(_) => {
                    *g = None;
                    return;
                }
            };
            let shown = match message {
                Some(m) => {
                    let Ok(permit) = self.shared.workers.clone().acquire_owned().await else {
                        return;
                    };
                    let (shared, login, address, mailbox, peer) = (
                        self.shared.clone(),
                        self.login.clone(),
                        self.address.clone(),
                        self.mailbox.clone(),
                        self.peer.clone(),
                    );
                    let uv = self.uidvalidity;
                    match tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        decrypt(&shared, &login, &address, &mailbox, uv, uid, &peer, &m)
                    })
                    .await
                    {
                        Ok(s) => s,
                        Err(_) => return,
                    }
                }
                None => Shown::Stored,
            };
            let shared = self.shared.clone();
            let _ =
                tokio::task::spawn_blocking(move || shared.cache.put(key, Arc::new(shown))).await;
            drop(g);
        }
    }

    /// The mailbox's encrypted UIDs (the worker logged in and the mailbox examined first).
    async fn encrypted(&self) -> Option<Vec<u32>> {
        let mut g = self.worker.lock().await;
        if self.cancelled() {
            return None;
        }
        if g.is_none() {
            *g = Some(
                Worker::login(&self.shared.connector, &self.login, &self.credential)
                    .await
                    .ok()?,
            );
        }
        let w = g.as_mut()?;
        let r = async {
            w.examine(&self.mailbox).await?;
            if w.selected.as_ref().map(|(_, v)| *v) != Some(Some(self.uidvalidity)) {
                bail!("the mailbox changed");
            }
            w.encrypted_uids().await
        }
        .await;
        match r {
            Ok(u) => Some(u),
            Err(_) => {
                *g = None;
                None
            }
        }
    }
}

/// The UIDs of a UIDPLUS set in the order RFC 4315 pairs them (each range ascending, as
/// the set it names; at most 10,000).
fn expand_uids(set: &imap_codec::imap_types::extensions::uidplus::UidSet) -> Vec<u32> {
    use imap_codec::imap_types::extensions::uidplus::UidElement;
    let mut out = Vec::new();
    for e in set.0.as_ref() {
        let (a, b) = match e {
            UidElement::Single(u) => (u.get(), u.get()),
            UidElement::Range(a, b) => (a.get(), b.get()),
        };
        for u in a.min(b)..=a.max(b) {
            if out.len() >= 10_000 {
                return out;
            }
            out.push(u);
        }
    }
    out
}

fn filter_code(body: &mut StatusBody<'static>) {
    if let Some(Code::Capability(caps)) = &body.code {
        body.code = rewrite::filter_caps(caps).map(Code::Capability);
    }
}

fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

/// `{n+}\r\n` at the end of a line becomes `{n}\r\n`.
fn make_sync(line: &mut Vec<u8>) {
    if line.ends_with(b"+}\r\n") {
        let at = line.len() - 4;
        line.remove(at);
    }
}

/// The login name and password of a SASL PLAIN message (`authzid NUL authcid NUL passwd`);
/// `None` when it authorizes as someone other than who authenticates (a proxy or master
/// login never unlocks a key) or does not parse.
fn plain_identity(b: &[u8]) -> Option<(String, Zeroizing<String>)> {
    let mut it = b.split(|c| *c == 0);
    let authzid = it.next()?;
    let authcid = it.next()?;
    let passwd = it.next()?;
    if it.next().is_some() {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid {
        return None;
    }
    Some((
        String::from_utf8(authcid.to_vec()).ok()?,
        Zeroizing::new(String::from_utf8(passwd.to_vec()).ok()?),
    ))
}

/// Decrypts one stored message with `address`'s keys (audited in the vault's chain under
/// `imap:LOGIN from PEER`, and in the audit log with mailbox and UID).
#[allow(clippy::too_many_arguments)]
fn decrypt(
    shared: &Shared,
    login: &str,
    address: &str,
    mailbox: &str,
    uidvalidity: u32,
    uid: u32,
    peer: &str,
    message: &[u8],
) -> Shown {
    let started = Instant::now();
    let actor = crate::keys::actor("imap", login, peer);
    let acting = Acting::new(shared.keys.as_ref(), actor.clone());
    let result = crate::docking::decrypt(
        &acting,
        &shared.anchors,
        message,
        &[address.to_string()],
        true,
    );
    let (shown, outcome) = match result {
        Ok((out, r)) if r.status == "decrypted" => {
            if out.contains(&0) {
                (
                    failed(message, "contains-nul"),
                    "failed:contains-nul".to_string(),
                )
            } else {
                (Shown::View(View::new(&out)), "decrypted".to_string())
            }
        }
        Ok(_) => (Shown::Stored, "not-encrypted".to_string()),
        Err(p) if p.kind == "no-matching-key" => (Shown::Stored, "no-matching-key".to_string()),
        Err(p) => (failed(message, p.kind), format!("failed:{}", p.kind)),
    };
    shared.audit.record(
        &format!("imap:{login}"),
        peer,
        &format!("imap-decrypt {mailbox} uidvalidity={uidvalidity} uid={uid}"),
        crate::docking::message_id(message),
        &outcome,
        200,
        started.elapsed(),
    );
    shown
}

/// The stored message with a header saying why it is not decrypted (incoming
/// `X-Sealgate-*` fields removed, so a sender cannot forge a result).
fn failed(message: &[u8], why: &str) -> Shown {
    let crlf = sealgate_imap::view::crlf(message);
    let mut out = format!("X-Sealgate-Decrypted: no; reason={why}\r\n").into_bytes();
    out.extend_from_slice(&strip_own_headers(&crlf));
    Shown::View(View::new(&out))
}

fn strip_own_headers(m: &[u8]) -> Vec<u8> {
    let end = m
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(m.len(), |i| i + 2);
    let (head, body) = m.split_at(end);
    let mut out = Vec::with_capacity(m.len());
    let mut skipping = false;
    for line in head.split_inclusive(|c| *c == b'\n') {
        let cont = matches!(line.first(), Some(b' ' | b'\t'));
        if !cont {
            skipping = line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"x-sealgate-");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

/// The read-only connection that downloads messages to decrypt (never the client's own:
/// its MSNs, `\Recent` and `\Seen` stay untouched).
struct Worker {
    s: Stream,
    fr: Fragmentizer,
    n: u32,
    selected: Option<(String, Option<u32>)>,
}

impl Worker {
    async fn login(c: &Connector, login: &str, credential: &Credential) -> anyhow::Result<Worker> {
        let (s, _) = c.connect().await?;
        let mut w = Worker {
            s,
            fr: Fragmentizer::new(MAX_DECRYPT + 64 * 1024),
            n: 0,
            selected: None,
        };
        let body = match credential {
            Credential::Password(password) => {
                CommandBody::login(login.to_string(), password.to_string())
                    .map_err(|_| anyhow::anyhow!("the login cannot be sent"))?
            }
            Credential::Sasl { mechanism, data } => CommandBody::Authenticate {
                mechanism: mechanism.clone(),
                initial_response: Some(imap_codec::imap_types::secret::Secret::new(
                    std::borrow::Cow::Owned(data.to_vec()),
                )),
            },
        };
        let (kind, _) = w.run(body).await?;
        if kind != StatusKind::Ok {
            bail!("the worker connection's login was refused");
        }
        Ok(w)
    }

    async fn examine(&mut self, mailbox: &str) -> anyhow::Result<()> {
        self.selected = None;
        let mb =
            Mailbox::try_from(mailbox.to_string()).map_err(|_| anyhow::anyhow!("mailbox name"))?;
        let (kind, resps) = self
            .run(CommandBody::Examine {
                mailbox: mb,
                parameters: vec![],
            })
            .await?;
        if kind != StatusKind::Ok {
            bail!("EXAMINE refused");
        }
        let uv = resps.iter().find_map(|r| match r {
            Response::Status(Status::Untagged(StatusBody {
                code: Some(Code::UidValidity(v)),
                ..
            })) => Some(v.get()),
            _ => None,
        });
        self.selected = Some((mailbox.to_string(), uv));
        Ok(())
    }

    /// The stored message `uid` of `mailbox` (examined first if another is), `None` when
    /// the mailbox's UIDVALIDITY is no longer `uidvalidity` (the UID may name another
    /// message now), the message is too large, or gone.
    async fn fetch_from(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        if self.selected.as_ref().map(|(n, _)| n.as_str()) != Some(mailbox) {
            self.examine(mailbox).await?;
        }
        if self.selected.as_ref().map(|(_, v)| *v) != Some(Some(uidvalidity)) {
            return Ok(None);
        }
        self.fetch(uid).await
    }

    async fn fetch(&mut self, uid: u32) -> anyhow::Result<Option<Vec<u8>>> {
        let set = SequenceSet::try_from(uid).map_err(|_| anyhow::anyhow!("uid"))?;
        // Too large to decrypt: shown as stored (and remembered so), never downloaded.
        let (kind, resps) = self
            .run(CommandBody::Fetch {
                sequence_set: set.clone(),
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                    MessageDataItemName::Uid,
                    MessageDataItemName::Rfc822Size,
                ]),
                uid: true,
                modifiers: vec![],
            })
            .await?;
        let size = resps.iter().find_map(|r| match r {
            Response::Data(Data::Fetch { items, .. })
                if items
                    .as_ref()
                    .iter()
                    .any(|i| matches!(i, MessageDataItem::Uid(u) if u.get() == uid)) =>
            {
                items.as_ref().iter().find_map(|i| match i {
                    MessageDataItem::Rfc822Size(n) => Some(*n),
                    _ => None,
                })
            }
            _ => None,
        });
        match size {
            Some(n) if kind == StatusKind::Ok && n <= MAX_DECRYPT => {}
            _ => return Ok(None),
        }
        let (kind, resps) = self
            .run(CommandBody::Fetch {
                sequence_set: set,
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(vec![
                    MessageDataItemName::Uid,
                    MessageDataItemName::BodyExt {
                        section: None,
                        partial: None,
                        peek: true,
                    },
                ]),
                uid: true,
                modifiers: vec![],
            })
            .await?;
        if kind != StatusKind::Ok {
            return Ok(None);
        }
        for r in resps {
            if let Response::Data(Data::Fetch { items, .. }) = r {
                let items = items.into_inner();
                let is_it = items
                    .iter()
                    .any(|i| matches!(i, MessageDataItem::Uid(u) if u.get() == uid));
                if !is_it {
                    continue;
                }
                for i in items {
                    if let MessageDataItem::BodyExt {
                        section: None,
                        origin: None,
                        data,
                    } = i
                    {
                        return Ok(data.into_option().map(|d| d.into_owned()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The UIDs whose Content-Type mentions `pkcs7-mime` (the cheap classifier; what is not
    /// really encrypted is shown as stored anyway).
    async fn encrypted_uids(&mut self) -> anyhow::Result<Vec<u32>> {
        let key = SearchKey::Header(
            AString::try_from("Content-Type").map_err(|_| anyhow::anyhow!("astring"))?,
            AString::try_from("pkcs7-mime").map_err(|_| anyhow::anyhow!("astring"))?,
        );
        let (kind, resps) = self
            .run(CommandBody::Search {
                charset: None,
                criteria: Vec1::from(key),
                uid: true,
            })
            .await?;
        if kind != StatusKind::Ok {
            bail!("the server refused the search for encrypted messages");
        }
        let mut uids = Vec::new();
        for r in resps {
            if let Response::Data(Data::Search(found, ..)) = r {
                uids.extend(search::uids(&found));
            }
        }
        Ok(uids)
    }

    /// Runs one command; returns its status and the responses before it.
    async fn run(
        &mut self,
        body: CommandBody<'static>,
    ) -> anyhow::Result<(StatusKind, Vec<Response<'static>>)> {
        self.n += 1;
        let tag = format!("W{}", self.n);
        let cmd = Command::new(tag.clone(), body).map_err(|_| anyhow::anyhow!("tag"))?;
        let mut frags: VecDeque<Fragment> = CommandCodec::default().encode(&cmd).collect();
        let mut out = Vec::new();
        let timeout = Duration::from_secs(120);
        loop {
            // Write up to the next literal, then wait for the continuation.
            let mut waiting = false;
            while let Some(f) = frags.pop_front() {
                match f {
                    Fragment::Line { mut data } => {
                        make_sync(&mut data);
                        self.s.write_all(&data).await?;
                    }
                    Fragment::Literal { data, .. } => {
                        frags.push_front(Fragment::Literal {
                            data,
                            mode: LiteralMode::Sync,
                        });
                        waiting = true;
                        break;
                    }
                }
            }
            self.s.flush().await?;
            loop {
                let r = tokio::time::timeout(
                    timeout,
                    upstream::read_response(&mut self.s, &mut self.fr),
                )
                .await
                .context("the IMAP server did not answer in time")??;
                match r {
                    Response::CommandContinuationRequest(_) if waiting => {
                        if let Some(Fragment::Literal { data, .. }) = frags.pop_front() {
                            self.s.write_all(&data).await?;
                        }
                        break;
                    }
                    Response::Status(Status::Tagged(t)) if t.tag.as_ref() == tag => {
                        return Ok((t.body.kind, out));
                    }
                    Response::Status(Status::Bye(_)) => bail!("the IMAP server said BYE"),
                    // A continuation nothing waits for (a refused SASL exchange): cancelled.
                    Response::CommandContinuationRequest(_) => {
                        self.s.write_all(b"*\r\n").await?;
                        self.s.flush().await?;
                    }
                    r => {
                        if out.len() < 10_000 {
                            out.push(r);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identities() {
        let (u, p) = plain_identity(b"\0alice@example.test\0pw").expect("plain");
        assert_eq!((u.as_str(), p.as_str()), ("alice@example.test", "pw"));
        assert!(plain_identity(b"alice@example.test\0alice@example.test\0pw").is_some());
        // Authorizing as someone else never selects a key.
        assert!(plain_identity(b"victim@example.test\0alice@example.test\0pw").is_none());
        assert!(plain_identity(b"garbage").is_none());
    }

    #[test]
    fn sync_literals() {
        let mut l = b"A1 LOGIN {5+}\r\n".to_vec();
        make_sync(&mut l);
        assert_eq!(l, b"A1 LOGIN {5}\r\n");
    }

    #[test]
    fn own_headers_are_stripped_from_a_failed_view() {
        let m = b"X-Sealgate-Decrypted: yes;\r\n forged\r\nSubject: s\r\n\r\nbody\r\n";
        assert_eq!(strip_own_headers(m), b"Subject: s\r\n\r\nbody\r\n");
    }
}
