//! A small XML reader for the configuration documents S3 clients send
//! (`PutBucketNotificationConfiguration`): elements, text and entities, nothing more. Pure, so
//! the fuzz target can use it without the server feature.

/// An XML element: local name (namespace prefix dropped), children, and text content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XmlElement {
    /// Local name.
    pub name: String,
    /// Child elements in order.
    pub children: Vec<XmlElement>,
    /// Concatenated, unescaped character data directly inside this element.
    pub text: String,
}

impl XmlElement {
    /// Child elements with this local name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a XmlElement> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// The first child element with this local name.
    pub fn first(&self, name: &str) -> Option<&XmlElement> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Parses one XML document into its root element. Supports what configuration documents use:
/// the XML declaration, comments, CDATA, attributes (ignored), self-closing tags, the five
/// predefined entities and numeric character references. Errors name what is wrong and where.
pub fn parse_xml(input: &str) -> Result<XmlElement, String> {
    let b = input.as_bytes();
    let mut i = 0;
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut root: Option<XmlElement> = None;
    while i < b.len() {
        if b[i] == b'<' {
            let rest = &input[i..];
            if rest.starts_with("<?") {
                i += rest.find("?>").ok_or("unterminated <? ... ?>")? + 2;
            } else if rest.starts_with("<!--") {
                i += rest.find("-->").ok_or("unterminated comment")? + 3;
            } else if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
                let end = cdata.find("]]>").ok_or("unterminated CDATA")?;
                let top = stack.last_mut().ok_or("CDATA outside the root element")?;
                top.text.push_str(&cdata[..end]);
                i += 9 + end + 3;
            } else if rest.starts_with("<!") {
                return Err(format!("unsupported markup at byte {i}"));
            } else if let Some(close) = rest.strip_prefix("</") {
                let end = close.find('>').ok_or("unterminated end tag")?;
                let name = local(close[..end].trim());
                let el = stack
                    .pop()
                    .ok_or_else(|| format!("end tag </{name}> without a start tag"))?;
                if el.name != name {
                    return Err(format!("end tag </{name}> does not match <{}>", el.name));
                }
                i += 2 + end + 1;
                attach(&mut stack, &mut root, el)?;
            } else {
                let end = tag_end(&rest[1..]).ok_or("unterminated start tag")?;
                let inner = &rest[1..1 + end];
                let self_closing = inner.ends_with('/');
                let inner = inner.trim_end_matches('/');
                let name = inner
                    .split(|c: char| c.is_ascii_whitespace())
                    .next()
                    .unwrap_or("");
                if name.is_empty() {
                    return Err(format!("empty tag name at byte {i}"));
                }
                let el = XmlElement {
                    name: local(name).to_owned(),
                    ..Default::default()
                };
                i += 1 + end + 1;
                if self_closing {
                    attach(&mut stack, &mut root, el)?;
                } else {
                    if root.is_some() {
                        return Err("content after the root element".into());
                    }
                    stack.push(el);
                }
            }
        } else {
            let end = input[i..].find('<').map_or(b.len(), |n| i + n);
            let raw = &input[i..end];
            match stack.last_mut() {
                Some(top) => top.text.push_str(&unescape(raw)?),
                None if raw.trim().is_empty() => {}
                None => return Err("text outside the root element".into()),
            }
            i = end;
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("element <{}> is not closed", open.name));
    }
    root.ok_or_else(|| "no root element".into())
}

/// The end of a start tag (`>` outside quoted attribute values), relative to `s`.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn attach(
    stack: &mut [XmlElement],
    root: &mut Option<XmlElement>,
    el: XmlElement,
) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err("more than one root element".into()),
    }
    Ok(())
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .filter(|&n| n <= 10)
            .ok_or("'&' without an entity")?;
        let ent = &after[..semi];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{ent};"))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes text for XML content (the inverse of what [`parse_xml`] unescapes).
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_declaration_comments_cdata_and_entities() {
        let root = parse_xml("<?xml version=\"1.0\"?><!-- c --><x:A xmlns:x=\"u\" b='>'><B>a&amp;b&#65;&#x42;</B><C/><D><![CDATA[<raw>]]></D></x:A>").unwrap();
        assert_eq!(root.name, "A");
        assert_eq!(root.first("B").unwrap().text, "a&bAB");
        assert!(root.first("C").is_some());
        assert_eq!(root.first("D").unwrap().text, "<raw>");
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "<a>&bogus;</a>",
            "text",
            "</a>",
        ] {
            assert!(parse_xml(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Arbitrary input never panics, and text survives escaping.
        #[test]
        fn xml_reader_is_total(s in ".{0,200}", t in ".{0,40}") {
            let _ = parse_xml(&s);
            let doc = format!("<a><b>{}</b></a>", escape(&t));
            let root = parse_xml(&doc).unwrap();
            prop_assert_eq!(&root.children[0].text, &t);
        }
    }
}
