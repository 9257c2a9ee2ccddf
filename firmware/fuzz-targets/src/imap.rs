//! Fuzz target for the IMAP proxy's protocol layer (`sealgate-imap`): arbitrary bytes as a
//! client command (the FETCH and SEARCH rewrites), as a server response (the probe taken out, content
//! items answered from a view) and as a message (the decrypted view: every section,
//! `BODYSTRUCTURE`, `BODY`, `ENVELOPE`); the same bytes as an XOAUTH2 / OAUTHBEARER message
//! and as a token introspection answer (`sealgate_imap::oauth`).
//!
//! Invariants: no panic; everything the proxy would send parses again with imap-codec (a
//! rewritten command, a rewritten response).

use sealgate_imap::imap_codec::decode::Decoder;
use sealgate_imap::imap_codec::encode::Encoder;
use sealgate_imap::imap_codec::imap_types::IntoStatic;
use sealgate_imap::imap_codec::imap_types::command::CommandBody;
use sealgate_imap::imap_codec::imap_types::core::Vec1;
use sealgate_imap::imap_codec::imap_types::fetch::MessageDataItem;
use sealgate_imap::imap_codec::imap_types::response::{Data, Response};
use sealgate_imap::imap_codec::{CommandCodec, ResponseCodec};
use sealgate_imap::rewrite::{self, FetchPlan};
use sealgate_imap::search;
use sealgate_imap::view::View;

fn reparses_response(r: &Response<'_>) {
    let bytes = ResponseCodec::default().encode(r).dump();
    let ok = ResponseCodec::default().decode(&bytes);
    assert!(ok.is_ok(), "the proxy's response does not parse: {bytes:?}");
}

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    // A message to build the view from: the input after the first NUL (or all of it).
    let (head, message) = match input.iter().position(|c| *c == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, input),
    };
    let view = View::new(message);
    // OAuth: a client's SASL message and the introspection endpoint's answer.
    let _ = sealgate_imap::oauth::xoauth2(head);
    let _ = sealgate_imap::oauth::oauthbearer(head);
    let _ = sealgate_imap::oauth::identity_from_answer(head, "username", i64::from(mode));
    match mode % 3 {
        0 => {
            // Client command: the FETCH rewrite, and what goes upstream parses again.
            if let Ok((_, cmd)) = CommandCodec::default().decode(head) {
                let mut cmd = cmd.into_static();
                if let CommandBody::Fetch {
                    macro_or_item_names,
                    uid,
                    ..
                } = &mut cmd.body
                {
                    let _ = rewrite::asks_binary_partial(macro_or_item_names);
                    let _ = rewrite::plan_fetch(macro_or_item_names, *uid);
                }
                // A content SEARCH rewritten over two views of the message.
                if let CommandBody::Search { criteria, .. } = &mut cmd.body
                    && search::needs_views(criteria.as_ref())
                {
                    let s = search::Searchable::new(&view);
                    search::rewrite(criteria, &[(1, s.clone()), (u32::from(mode) + 2, s)]);
                }
                let bytes = CommandCodec::default().encode(&cmd).dump();
                assert!(
                    CommandCodec::default().decode(&bytes).is_ok(),
                    "the proxy's command does not parse: {bytes:?}"
                );
            }
        }
        1 => {
            // Server response: probe taken out, content answered from the view.
            if let Ok((_, resp)) = ResponseCodec::default().decode(head) {
                let mut resp = resp.into_static();
                if let Response::Data(Data::Fetch { items, .. }) = &mut resp {
                    let mut list: Vec<MessageDataItem<'static>> = items.as_ref().to_vec();
                    let probed = rewrite::take_probe(&mut list, mode & 4 != 0);
                    if probed.is_some() || mode & 8 != 0 {
                        rewrite::answer_from_view(&mut list, &view, &FetchPlan::default());
                    }
                    if let Ok(v) = Vec1::try_from(list) {
                        *items = v;
                    }
                }
                reparses_response(&resp);
            }
        }
        _ => {
            // The view itself: every item computed and sent in a FETCH answer.
            let items = vec![
                MessageDataItem::Rfc822Size(view.size()),
                MessageDataItem::BodyStructure(view.body_structure(true)),
                MessageDataItem::Body(view.body_structure(false)),
                MessageDataItem::Envelope(view.envelope()),
            ];
            let _ = view.header();
            let _ = view.text();
            if let Ok(items) = Vec1::try_from(items) {
                let seq = std::num::NonZeroU32::MIN;
                reparses_response(&Response::Data(Data::Fetch { seq, items }));
            }
        }
    }
}
