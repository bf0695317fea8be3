//! Replies in the Alibaba envelope, as JSON (default) or XML.

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

/// Renders a reply object. `root` is the XML root element
/// (`<Action>Response` or `Error`).
pub fn render(format: Format, root: &str, body: &Map<String, Value>) -> String {
    match format {
        Format::Json => Value::Object(body.clone()).to_string(),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            element(&mut out, root, &Value::Object(body.clone()));
            out
        }
    }
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
        Value::Object(map) => {
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
    fn json_is_plain() {
        let body = json!({"RequestId": "R", "TotalCount": 3});
        let text = render(Format::Json, "X", body.as_object().unwrap());
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["TotalCount"], 3);
    }
}
