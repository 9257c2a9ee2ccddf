//! `GET /directory/lookup?address=` (any role): which source of the certificate directory
//! answers for an address, the certificate, and why other candidates were refused; the same
//! JSON object `sealctl directory lookup` prints. Audited like every lookup (the directory's
//! audit file, `DATA/audit/directory.jsonl`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{Data, Need, answer, authorize, ok_json};
use crate::problem::Problem;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupQuery {
    address: String,
}

/// An address worth asking a directory for: `local@domain`, at most 254 characters, no
/// spaces or control characters.
fn plausible(a: &str) -> bool {
    a.len() <= 254
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !a.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '(' | ')' | '*' | '\\')
        })
}

/// `GET /directory/lookup?address=ADDRESS`.
async fn lookup(req: HttpRequest, ad: Data) -> HttpResponse {
    let asked = (|| {
        authorize(&req, &ad, Need::Read)?;
        let q = web::Query::<LookupQuery>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
        let address = q.address.trim().to_ascii_lowercase();
        if !plausible(&address) {
            return Err(Problem::bad_request("address is not an email address"));
        }
        let dir = crate::directory::get()
            .ok_or_else(|| Problem::internal("the certificate directory is not set up"))?;
        Ok((address, dir))
    })();
    let (address, dir) = match asked {
        Ok(v) => v,
        Err(p) => return answer(Err(p)),
    };
    let vault = ad.vault.clone();
    let found = web::block(move || {
        dir.lookup_with(vault.as_ref(), &address, dir.deadline())
            .to_json()
    })
    .await;
    answer(
        found
            .map(|v| ok_json(200, &v))
            .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL)),
    )
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/directory/lookup").route(web::get().to(lookup)));
}
