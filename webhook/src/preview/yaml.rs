//! Manifests read and written the way `kubectl` reads them (go-yaml v2 through sigs.k8s.io/yaml): YAML 1.1
//! scalars. A plain `0755` is the octal integer 493, `yes`/`no`/`on`/`off`/`y`/`n` are booleans, `1_000` is
//! 1000, merge keys (`<<: *base`) are applied, and a byte-order mark is skipped. On output every string a
//! YAML 1.1 reader would take for something else is quoted, so `kubectl apply` of the output reads what the
//! input said.
//!
//! serde-saphyr does the parsing, the scalar resolution and the quoting; this module only chooses its YAML
//! 1.1 options, bounds the work an input can cause, and narrows the boolean spellings to go-yaml's.

use std::borrow::Cow;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use crate::Error;

/// Deepest nesting accepted. Kubernetes objects (CRD schemas included) stay far below it; a hostile file
/// nested thousands deep is refused at once instead of costing time and stack.
pub const MAX_DEPTH: usize = 256;

/// The reader and the JSON value it builds recurse once per level; this much stack holds [`MAX_DEPTH`] levels
/// with room to spare in any build (a test thread has 2 MiB, not enough for an unoptimised build).
const PARSER_STACK_BYTES: usize = 64 << 20;

const BYTE_ORDER_MARK: char = '\u{feff}';

/// The spellings go-yaml v2 (and so kubectl) resolves to booleans. serde-saphyr accepts the same words in any
/// case; kubectl reads `yEs` as a string.
const GO_YAML_BOOLEANS: [&str; 22] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on",
    "On", "ON", "off", "Off", "OFF",
];

/// Quotes every plain scalar that is a YAML 1.1 boolean word in a casing go-yaml does not resolve (`yEs`,
/// `oN`), so that it is read as the string kubectl reads. The positions come from the YAML parser's events; a
/// stream it cannot parse is returned unchanged for the reader to report.
fn quote_mixed_case_booleans(text: &str) -> Cow<'_, str> {
    let mut spans = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let Event::Scalar(value, ScalarStyle::Plain, _, None) = event else { continue };
        let boolean_word =
            ["y", "yes", "n", "no", "true", "false", "on", "off"].iter().any(|w| value.eq_ignore_ascii_case(w));
        if !boolean_word || GO_YAML_BOOLEANS.contains(&value.as_ref()) {
            continue;
        }
        if let (Some(start), Some(end)) = (span.start.byte_offset(), span.end.byte_offset()) {
            if text.get(start..end) == Some(value.as_ref()) {
                spans.push(start..end);
            }
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut quoted = String::with_capacity(text.len() + 2 * spans.len());
    let mut copied = 0;
    for span in spans {
        quoted.push_str(&text[copied..span.start]);
        quoted.push('\'');
        quoted.push_str(&text[span.clone()]);
        quoted.push('\'');
        copied = span.end;
    }
    quoted.push_str(&text[copied..]);
    Cow::Owned(quoted)
}

/// Reads a YAML stream, or one JSON document, into documents; empty documents are skipped. Errors carry
/// `origin:line:column`.
pub fn read_documents(text: &str, origin: &str) -> Result<Vec<Value>, Error> {
    let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text);
    if text.trim_start().starts_with('{') {
        // serde_json refuses nesting deeper than 128 by itself.
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::syntax(origin, Some((e.line(), e.column())), e))?;
        return Ok(vec![value]);
    }
    let parse = || {
        let text = quote_mixed_case_booleans(text);
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_depth: MAX_DEPTH,
                flow_nesting_limit: MAX_DEPTH,
                max_documents: 100_000,
            },
            legacy_octal_numbers: true,
        };
        serde_saphyr::from_multiple_with_options::<Value>(&text, options).map_err(|e| {
            let location = e.location().map(|l| (l.line() as usize, l.column() as usize));
            Error::syntax(origin, location, e.without_snippet())
        })
    };
    let documents = std::thread::scope(|scope| {
        let parser = std::thread::Builder::new().name("yaml-reader".into()).stack_size(PARSER_STACK_BYTES);
        parser.spawn_scoped(scope, parse).map_err(Error::Io)?.join().expect("the YAML reader does not panic")
    })?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// One document as YAML, quoted for YAML 1.1 readers.
pub fn write_document(value: &Value) -> Result<String, Error> {
    let options = serde_saphyr::ser_options! {
        // Long one-line strings (command lines, JSON in annotations) stay on one line: folding them would
        // be correct YAML but harder to compare with the input.
        folded_wrap_chars: 1 << 30,
    };
    serde_saphyr::to_string_with_options(value, options).map_err(|e| Error::Io(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        let mut documents = read_documents(text, "test").unwrap();
        assert_eq!(documents.len(), 1, "{documents:?}");
        documents.remove(0)
    }

    #[test]
    fn reads_yaml_1_1_scalars_as_go_yaml_does() {
        let v = one(
            "a: 0755\nb: 01777\nc: 1_000\nd: yes\ne: No\nf: on\ng: OFF\nh: '0755'\ni: \"no\"\nj: 0x1F\nk: 1e3\nl: ~\n",
        );
        assert_eq!(v["a"], json!(493));
        assert_eq!(v["b"], json!(1023));
        assert_eq!(v["c"], json!(1000));
        assert_eq!((&v["d"], &v["e"], &v["f"], &v["g"]), (&json!(true), &json!(false), &json!(true), &json!(false)));
        assert_eq!((&v["h"], &v["i"]), (&json!("0755"), &json!("no")));
        assert_eq!(v["j"], json!(31));
        assert_eq!(v["k"].as_f64(), Some(1000.0));
        assert_eq!(v["l"], Value::Null);
    }

    #[test]
    fn booleans_are_go_yaml_spellings_only() {
        let v = one("a: yEs\nb: oN\nc: [nO, TRUE, tRUE]\nd: {FaLsE: Off}\ne: 'yEs'\nf: yes\n");
        assert_eq!(v["a"], json!("yEs"));
        assert_eq!(v["b"], json!("oN"));
        assert_eq!(v["c"], json!(["nO", true, "tRUE"]));
        assert_eq!(v["d"], json!({"FaLsE": false}));
        assert_eq!((&v["e"], &v["f"]), (&json!("yEs"), &json!(true)));
        // An error after a quoted word still names the input.
        let err = read_documents("a: yEs\nb: [\n", "t").unwrap_err();
        assert!(err.to_string().starts_with("t:"), "{err}");
    }

    #[test]
    fn applies_merge_keys_and_skips_a_byte_order_mark() {
        let text = "\u{feff}base: &base\n  image: busybox\n  volumeMounts:\n  - name: shared\n    mountPath: /s\n\
                    c:\n  <<: *base\n  name: c2\n";
        let v = one(text);
        assert_eq!(v["c"]["name"], "c2");
        assert_eq!(v["c"]["volumeMounts"][0]["name"], "shared");
        assert!(v["c"].get("<<").is_none());
    }

    #[test]
    fn reads_streams_and_json() {
        let documents = read_documents("---\na: 1\n---\n---\nb: 2\n", "t").unwrap();
        assert_eq!(documents, vec![json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(read_documents("{\"a\": [1]}", "t").unwrap(), vec![json!({"a": [1]})]);
    }

    #[test]
    fn writes_every_ambiguous_string_quoted_and_numbers_as_numbers() {
        let ambiguous = [
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "Y",
            "N",
            "YES",
            "Off",
            "true",
            "False",
            "null",
            "~",
            "",
            "1_000",
            "0755",
            "01777",
            "0x1F",
            "1e3",
            "1.5",
            ".inf",
            "2024-01-02",
            "12:30",
            "<<",
        ];
        let input = json!({"strings": ambiguous, "mode": 1023, "ratio": 0.5, "flag": true});
        let text = write_document(&input).unwrap();
        for s in ambiguous {
            let plain_line = format!("- {s}\n");
            assert!(!text.contains(&plain_line), "{s:?} written plain:\n{text}");
        }
        assert!(text.contains("mode: 1023\n"), "{text}");
        // Read back with the YAML 1.1 rules, everything is what it was.
        assert_eq!(one(&text), input);
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        let depth = 20_000;
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let started = std::time::Instant::now();
        let err = read_documents(&text, "deep").unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
        assert!(err.is_bad_input());
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH - 2), "]".repeat(MAX_DEPTH - 2));
        assert!(read_documents(&fine, "ok").is_ok());
    }
}
