//! The IMAP proxy's protocol layer without I/O (the daemon's `imap/` module does the
//! sockets): what a decrypting proxy changes in commands and responses.
//!
//! - [`view`]: the decrypted view `V` of one message and every FETCH item computed from it
//!   as an IMAP server computes them for a stored message (`BODY[...]` sections and
//!   partials, `RFC822*`, `RFC822.SIZE`, `BODYSTRUCTURE`, `BODY`, `ENVELOPE`).
//! - [`rewrite`]: the capability allow-list, the `ENABLE` filter, the probe added to a
//!   client's FETCH and the answer rewritten from a view.
//! - [`search`]: SEARCH criteria rewritten so the server answers for the decrypted views.
//! - [`oauth`]: an XOAUTH2 / OAUTHBEARER message's token and name, and the account a token
//!   introspection answer names.
//!
//! **Invariants: no I/O, no panics on any input, every loop bounded; fuzzed**
//! (`fuzz/fuzz_targets/imap.rs`).

pub mod oauth;
pub mod rewrite;
pub mod search;
pub mod view;

pub use imap_codec;
