//! Replies in the Alibaba envelope, as JSON (default) or XML.

use std::sync::Arc;

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json;charset=utf-8",
            Format::Xml => "text/xml;charset=utf-8",
        }
    }
}

/// What an action answers: the reply object and, for a listing answered
/// from a cache, its items already rendered as JSON text, which go under
/// `body[outer][inner]` as they are (no parse, copy or re-serialisation of
/// what did not change).
#[derive(Debug, Default)]
pub struct Reply {
    pub body: Map<String, Value>,
    pub spliced: Option<Spliced>,
}

#[derive(Debug)]
pub struct Spliced {
    pub outer: &'static str,
    pub inner: &'static str,
    /// Each one JSON object.
    pub items: Vec<Arc<str>>,
}

impl From<Map<String, Value>> for Reply {
    fn from(body: Map<String, Value>) -> Reply {
        Reply {
            body,
            spliced: None,
        }
    }
}

/// Renders a reply. `root` is the XML root element (`<Action>Response`).
pub fn render_reply(format: Format, root: &str, reply: &Reply) -> String {
    let Some(sp) = &reply.spliced else {
        return render(format, root, &reply.body);
    };
    match format {
        Format::Json => {
            // The object's keys in their (sorted) order, as serde_json
            // writes a map, with the listing written in its place.
            let mut out =
                String::with_capacity(256 + sp.items.iter().map(|i| i.len() + 1).sum::<usize>());
            out.push('{');
            let mut first = true;
            let mut key = |out: &mut String, k: &str| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                out.push_str(&Value::from(k).to_string());
                out.push(':');
            };
            let listing = |out: &mut String| {
                out.push('{');
                out.push_str(&Value::from(sp.inner).to_string());
                out.push_str(":[");
                out.push_str(&sp.items.join(","));
                out.push_str("]}");
            };
            let mut placed = false;
            for (k, v) in &reply.body {
                if k.as_str() > sp.outer && !placed {
                    key(&mut out, sp.outer);
                    listing(&mut out);
                    placed = true;
                }
                if k == sp.outer {
                    continue;
                }
                key(&mut out, k);
                out.push_str(&v.to_string());
            }
            if !placed {
                key(&mut out, sp.outer);
                listing(&mut out);
            }
            out.push('}');
            out
        }
        // XML is rare: the items are parsed back and rendered as any reply.
        Format::Xml => {
            let mut body = reply.body.clone();
            let items: Vec<Value> = sp
                .items
                .iter()
                .map(|i| serde_json::from_str(i).unwrap_or(Value::Null))
                .collect();
            let mut inner = Map::new();
            inner.insert(sp.inner.to_string(), Value::Array(items));
            body.insert(sp.outer.to_string(), Value::Object(inner));
            render(Format::Xml, root, &body)
        }
    }
}

/// Renders a reply object. `root` is the XML root element
/// (`<Action>Response` or `Error`).
pub fn render(format: Format, root: &str, body: &Map<String, Value>) -> String {
    match format {
        // Serialising a map of JSON values cannot fail (its keys are
        // strings); it is written as it is, without a copy.
        Format::Json => serde_json::to_string(body).unwrap_or_default(),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            object(&mut out, root, body);
            out
        }
    }
}

fn object(out: &mut String, name: &str, map: &Map<String, Value>) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    for (k, v) in map {
        element(out, k, v);
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// An array under key K repeats `<K>` for each item, which is how the JSON
/// double wrapping (`{"FileSystems":{"FileSystem":[...]}}`) maps onto XML.
fn element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Array(items) => {
            for item in items {
                element(out, name, item);
            }
        }
        Value::Object(map) => object(out, name, map),
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
        }
        scalar => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            let text = match scalar {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            escape_into(out, &text);
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_repeats_list_items_and_escapes() {
        let body = json!({"RequestId": "R", "FileSystems": {"FileSystem": [{"FileSystemId": "a"}, {"FileSystemId": "b&c"}]}});
        let xml = render(
            Format::Xml,
            "DescribeFileSystemsResponse",
            body.as_object().unwrap(),
        );
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeFileSystemsResponse>"
        ));
        assert!(xml.contains("<FileSystems><FileSystem><FileSystemId>a</FileSystemId></FileSystem><FileSystem><FileSystemId>b&amp;c</FileSystemId></FileSystem></FileSystems>"));
        assert!(xml.ends_with("</DescribeFileSystemsResponse>"));
    }

    #[test]
    fn spliced_items_render_as_the_same_object_would() {
        let items = [
            json!({"FileSystemId": "a", "Tags": {"Tag": []}}),
            json!({"FileSystemId": "b\"<"}),
        ];
        let whole = json!({
            "RequestId": "R", "TotalCount": 2, "PageSize": 10,
            "FileSystems": {"FileSystem": items.clone()},
        });
        let reply = Reply {
            body: json!({"RequestId": "R", "TotalCount": 2, "PageSize": 10})
                .as_object()
                .unwrap()
                .clone(),
            spliced: Some(Spliced {
                outer: "FileSystems",
                inner: "FileSystem",
                items: items.iter().map(|i| Arc::from(i.to_string())).collect(),
            }),
        };
        for format in [Format::Json, Format::Xml] {
            assert_eq!(
                render_reply(format, "R", &reply),
                render(format, "R", whole.as_object().unwrap()),
                "{format:?}"
            );
        }
        // Also when the listing's key sorts last, or the body is empty.
        let last = Reply {
            body: Map::new(),
            spliced: Some(Spliced {
                outer: "Z",
                inner: "I",
                items: vec![],
            }),
        };
        assert_eq!(render_reply(Format::Json, "R", &last), r#"{"Z":{"I":[]}}"#);
    }

    #[test]
    fn json_is_plain() {
        let body = json!({"RequestId": "R", "TotalCount": 3});
        let text = render(Format::Json, "X", body.as_object().unwrap());
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["TotalCount"], 3);
    }
}
