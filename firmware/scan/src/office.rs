//! The text of office documents for DLP: Office Open XML (`.docx`, `.xlsx`, `.pptx`) and
//! OpenDocument (`.odt`, `.ods`, `.odp`), both zip archives of XML. The archive is opened by
//! [`crate::unpack`] within its limits; here the members that carry the document's text are
//! read as XML: character data kept, markup dropped, a line break at each paragraph, cell,
//! row or shared string, the five XML entities and character references decoded.
//!
//! Attacker: whoever wrote the document. The XML is not parsed into a tree (no entity
//! expansion, no DTD): one linear pass over bytes already bounded by the unpacking budget.

use crate::unpack::Member;

/// Which family a zip is, by its members: `Some("ooxml")` or `Some("odf")`.
pub fn family(members: &[Member]) -> Option<&'static str> {
    let named = |n: &str| members.iter().any(|m| m.name.as_deref() == Some(n));
    if named("[Content_Types].xml")
        && members.iter().any(|m| {
            m.name.as_deref().is_some_and(|n| {
                n.starts_with("word/") || n.starts_with("xl/") || n.starts_with("ppt/")
            })
        })
    {
        return Some("ooxml");
    }
    let odf = members.iter().any(|m| {
        m.name.as_deref() == Some("mimetype")
            && m.data.starts_with(b"application/vnd.oasis.opendocument")
    });
    if odf && named("content.xml") {
        return Some("odf");
    }
    None
}

/// Is this member one that carries the document's text?
pub fn is_text_member(name: &str) -> bool {
    let xml = name.ends_with(".xml");
    xml && (name == "word/document.xml"
        || name.starts_with("word/header")
        || name.starts_with("word/footer")
        || matches!(
            name,
            "word/footnotes.xml" | "word/endnotes.xml" | "word/comments.xml"
        )
        || name == "xl/sharedStrings.xml"
        || name.starts_with("xl/worksheets/sheet")
        || name.starts_with("ppt/slides/slide")
        || name.starts_with("ppt/notesSlides/")
        || name == "content.xml")
}

/// The document's text: its text members in archive order, one after the other.
pub fn text(members: &[Member]) -> String {
    let mut out = String::new();
    for m in members {
        if m.name.as_deref().is_some_and(is_text_member) {
            xml_text(&String::from_utf8_lossy(&m.data), &mut out);
            out.push('\n');
        }
    }
    out
}

/// Elements whose start or end breaks the text (paragraphs, cells, rows, tabs, breaks).
fn breaks(local: &str) -> Option<char> {
    match local {
        "p" | "br" | "tr" | "row" | "si" | "h" | "list-item" | "table-row" | "line-break" => {
            Some('\n')
        }
        "tab" | "tc" | "c" | "table-cell" | "s" => Some(' '),
        _ => None,
    }
}

/// Appends the character data of `xml` to `out`.
pub fn xml_text(xml: &str, out: &mut String) {
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        push_decoded(&rest[..lt], out);
        let after = &rest[lt..];
        if let Some(body) = after.strip_prefix("<![CDATA[") {
            let end = body.find("]]>").unwrap_or(body.len());
            out.push_str(&body[..end]);
            rest = body.get(end + 3..).unwrap_or_default();
            continue;
        }
        if let Some(body) = after.strip_prefix("<!--") {
            rest = body.find("-->").map_or("", |e| &body[e + 3..]);
            continue;
        }
        let Some(gt) = after.find('>') else {
            return;
        };
        let tag = after[1..gt].trim_start_matches('/');
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        let local = name.rsplit(':').next().unwrap_or_default();
        if let Some(c) = breaks(local)
            && !out.ends_with(c)
        {
            out.push(c);
        }
        rest = &after[gt + 1..];
    }
    push_decoded(rest, out);
}

fn push_decoded(s: &str, out: &mut String) {
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').filter(|&i| i <= 10);
        let decoded = semi.and_then(|i| match &after[..i] {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            r if r.starts_with("#x") || r.starts_with("#X") => u32::from_str_radix(&r[2..], 16)
                .ok()
                .and_then(char::from_u32),
            r if r.starts_with('#') => r[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        });
        match (decoded, semi) {
            (Some(c), Some(i)) => {
                out.push(c);
                rest = &after[i + 1..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_and_paragraphs_break() {
        let mut out = String::new();
        xml_text(
            "<?xml version=\"1.0\"?><w:document><w:body><w:p><w:r><w:t>4111 1111 </w:t></w:r>\
             <w:r><w:t xml:space=\"preserve\">1111 1111</w:t></w:r></w:p><w:p><w:t>a&amp;b&#65;</w:t></w:p>\
             <!-- x --><![CDATA[<c>]]></w:body></w:document>",
            &mut out,
        );
        assert!(out.contains("4111 1111 1111 1111"), "{out:?}");
        assert!(out.contains("\na&bA"), "{out:?}");
        assert!(out.contains("<c>"), "{out:?}");
    }

    #[test]
    fn families_by_members() {
        let m = |n: &str, d: &[u8]| Member {
            name: Some(n.into()),
            data: d.to_vec(),
        };
        let docx = [
            m("[Content_Types].xml", b""),
            m("word/document.xml", b"<w:t>x</w:t>"),
        ];
        assert_eq!(family(&docx), Some("ooxml"));
        assert_eq!(text(&docx).trim(), "x");
        let odt = [
            m("mimetype", b"application/vnd.oasis.opendocument.text"),
            m("content.xml", b"<text:p>y</text:p>"),
        ];
        assert_eq!(family(&odt), Some("odf"));
        assert_eq!(family(&[m("a.txt", b"")]), None);
    }
}
