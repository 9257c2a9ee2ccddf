//! The text of a PDF for DLP: the strings its content streams show.
//!
//! Not a PDF renderer: every `stream ... endstream` is found by its keywords (the `/Length`
//! is not trusted), inflated when it is `/FlateDecode` (through the unpacking budget, so a
//! stream that expands past the ratio or the total is a bomb), and, when it holds text
//! objects (`BT ... ET`), the literal `( )` and hex `< >` strings shown in them are read as
//! single-byte text, with a line break at each text object and a space at each text move.
//! That reads what PDF writers put with the standard fonts (ReportLab, fpdf2, LibreOffice
//! with simple encodings); text shown with composite (CID) fonts needs the font's `ToUnicode`
//! map and is not read.
//!
//! Attacker: whoever wrote the PDF. One linear pass over the file and each stream, bounded by
//! [`crate::Limits`]; an encrypted PDF or a stream that does not inflate is
//! [`Anomaly::Unscannable`], never a panic.

use std::io::Read;

use crate::unpack::{Anomaly, Budget};

/// Streams looked at in one PDF.
pub const MAX_STREAMS: usize = 4_096;

/// Does `data` look like a PDF?
pub fn is_pdf(data: &[u8]) -> bool {
    data.get(..1024)
        .unwrap_or(data)
        .windows(5)
        .any(|w| w == b"%PDF-")
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The text of the PDF, or why it cannot be read.
pub fn text(data: &[u8], budget: &mut Budget) -> Result<String, Anomaly> {
    // The trailer names an /Encrypt dictionary: strings and streams are ciphertext.
    let tail = &data[data.len().saturating_sub(4096)..];
    if find(tail, b"/Encrypt", 0).is_some() || find(data, b"/Encrypt ", 0).is_some() {
        return Err(Anomaly::Unscannable("the PDF is encrypted".into()));
    }
    let mut out = String::new();
    let mut at = 0;
    let mut streams = 0;
    while let Some(kw) = find(data, b"stream", at) {
        // `endstream` contains `stream`: skip those.
        if kw >= 3 && &data[kw - 3..kw] == b"end" {
            at = kw + 6;
            continue;
        }
        let mut start = kw + 6;
        match data.get(start..start + 2) {
            Some(b"\r\n") => start += 2,
            Some([b'\n', _]) | Some([b'\r', _]) => start += 1,
            _ => {
                at = kw + 6;
                continue;
            }
        }
        streams += 1;
        if streams > MAX_STREAMS {
            return Err(Anomaly::Bomb(format!(
                "more than {MAX_STREAMS} streams in the PDF"
            )));
        }
        let Some(end) = find(data, b"endstream", start) else {
            return Err(Anomaly::Unscannable("a PDF stream has no end".into()));
        };
        let dict_start = rfind(&data[at..kw], b"obj").map_or(at, |p| at + p);
        let dict = &data[dict_start..kw];
        let raw = &data[start..end];
        at = end + 9;
        let skip = [
            &b"/Image"[..],
            b"/XRef",
            b"/ObjStm",
            b"/Length1",
            b"/FontFile",
            b"/Metadata",
        ];
        if skip.iter().any(|s| find(dict, s, 0).is_some()) {
            continue;
        }
        let content =
            if find(dict, b"/FlateDecode", 0).is_some() || find(dict, b"/Fl ", 0).is_some() {
                inflate(raw, budget)?
            } else if find(dict, b"/Filter", 0).is_some() {
                continue; // other filters: images and fonts, not text
            } else {
                raw.to_vec()
            };
        shown_text(&content, &mut out);
    }
    Ok(out)
}

fn inflate(raw: &[u8], budget: &mut Budget) -> Result<Vec<u8>, Anomaly> {
    let allowance = budget.member_allowance(raw.len() as u64);
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(raw)
        .take(allowance.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Anomaly::Unscannable(format!("PDF stream: {e}")))?;
    if out.len() as u64 > allowance {
        return Err(Anomaly::Bomb(format!(
            "a PDF stream expands past {allowance} bytes"
        )));
    }
    budget.charge(out.len());
    Ok(out)
}

/// Appends the strings shown in the text objects of a content stream.
fn shown_text(c: &[u8], out: &mut String) {
    let mut i = 0;
    let mut in_text = false;
    while i < c.len() {
        match c[i] {
            b'%' => {
                while i < c.len() && c[i] != b'\n' && c[i] != b'\r' {
                    i += 1;
                }
            }
            b'(' => {
                let (s, next) = literal(c, i + 1);
                if in_text {
                    out.extend(s.iter().map(|&b| b as char));
                }
                i = next;
            }
            b'<' if c.get(i + 1) == Some(&b'<') => i += 2,
            b'<' => {
                let end = c[i..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map_or(c.len(), |p| i + p);
                if in_text {
                    let digits: Vec<u8> = c[i + 1..end]
                        .iter()
                        .filter_map(|&b| (b as char).to_digit(16).map(|d| d as u8))
                        .collect();
                    for pair in digits.chunks(2) {
                        let v = pair[0] << 4 | pair.get(1).copied().unwrap_or(0);
                        out.push(v as char);
                    }
                }
                i = end + 1;
            }
            b if b.is_ascii_alphabetic() || b == b'\'' || b == b'"' || b == b'*' => {
                let start = i;
                while i < c.len()
                    && (c[i].is_ascii_alphanumeric() || matches!(c[i], b'\'' | b'"' | b'*'))
                {
                    i += 1;
                }
                match &c[start..i] {
                    b"BT" => in_text = true,
                    b"ET" => {
                        in_text = false;
                        out.push('\n');
                    }
                    b"Td" | b"TD" | b"T*" | b"Tm" | b"'" | b"\"" if in_text => out.push(' '),
                    _ => {}
                }
            }
            _ => i += 1,
        }
    }
}

/// A literal string from just after its `(`: its bytes and where it ends.
fn literal(c: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut s = Vec::new();
    let mut depth = 1;
    while i < c.len() {
        let b = c[i];
        i += 1;
        match b {
            b'\\' => {
                let Some(&e) = c.get(i) else { break };
                i += 1;
                match e {
                    b'n' => s.push(b'\n'),
                    b'r' => s.push(b'\r'),
                    b't' => s.push(b'\t'),
                    b'b' | b'f' => {}
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match c.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        s.push((v & 0xff) as u8);
                    }
                    b'\r' | b'\n' => {}
                    other => s.push(other),
                }
            }
            b'(' => {
                depth += 1;
                s.push(b);
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                s.push(b);
            }
            _ => s.push(b),
        }
    }
    (s, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use std::io::Write;

    fn pdf_with(content: &[u8], flate: bool) -> Vec<u8> {
        let (body, filter) = if flate {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(content).expect("z");
            (z.finish().expect("z"), " /Filter /FlateDecode")
        } else {
            (content.to_vec(), "")
        };
        let mut p = format!(
            "%PDF-1.4\n4 0 obj\n<< /Length {}{filter} >>\nstream\n",
            body.len()
        )
        .into_bytes();
        p.extend_from_slice(&body);
        p.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n");
        p
    }

    #[test]
    fn strings_shown_in_text_objects_are_read() {
        let c = b"BT /F1 12 Tf 72 720 Td (Card: 4111 1111 1111 1111) Tj 0 -14 Td [(IB) -20 (AN\\051)] TJ <4142> Tj ET (not text) Tj";
        for flate in [false, true] {
            let t = text(&pdf_with(c, flate), &mut Budget::new(Limits::default())).expect("ok");
            assert!(t.contains("Card: 4111 1111 1111 1111"), "{t:?}");
            assert!(t.contains("IBAN)") && t.contains("AB"), "{t:?}");
            assert!(!t.contains("not text"), "{t:?}");
        }
    }

    #[test]
    fn bad_pdfs_are_unscannable_or_bombs_never_panics() {
        let mut b = Budget::new(Limits::default());
        assert!(matches!(
            text(b"%PDF-1.4\n1 0 obj << >>\nstream\nabc", &mut b),
            Err(Anomaly::Unscannable(_))
        ));
        let mut enc = pdf_with(b"BT (x) Tj ET", false);
        enc.extend_from_slice(b"trailer << /Encrypt 5 0 R >>");
        assert!(matches!(text(&enc, &mut b), Err(Anomaly::Unscannable(_))));
        let broken = b"%PDF-1.4\n<< /Filter /FlateDecode >>\nstream\nnot zlib\nendstream";
        assert!(matches!(text(broken, &mut b), Err(Anomaly::Unscannable(_))));
        let zeros = vec![b' '; 8 << 20];
        let bomb = pdf_with(&zeros, true);
        assert!(matches!(
            text(&bomb, &mut Budget::new(Limits::default())),
            Err(Anomaly::Bomb(_))
        ));
        // Mutations of a valid PDF: never a panic, never past the budget.
        let good = pdf_with(
            b"BT (a\\(b\\)) Tj [(c) -300 <4142>] TJ 1 0 0 1 0 0 Tm ET",
            true,
        );
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            let mut p = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % p.len();
                p[at] = (x >> 32) as u8;
            }
            let _ = text(&p, &mut Budget::new(Limits::default()));
        }
        for cut in 0..60 {
            let p = pdf_with(b"BT (a\\", false);
            let _ = text(&p[..cut.min(p.len())], &mut b);
        }
    }
}
