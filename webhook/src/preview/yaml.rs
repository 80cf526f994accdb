//! Manifests read and written the way `kubectl` reads them (go-yaml v2 through sigs.k8s.io/yaml): YAML 1.1
//! scalars. A plain `0755` is the octal integer 493, `yes`/`no`/`on`/`off`/`y`/`n` are booleans, `1_000` is
//! 1000, merge keys (`<<: *base`) are applied, and a byte-order mark is skipped. On output every string a
//! YAML 1.1 reader would take for something else is quoted, so `kubectl apply` of the output reads what the
//! input said.
//!
//! serde-saphyr does the parsing, the scalar resolution and the quoting; this module only chooses its YAML
//! 1.1 options and bounds the work an input can cause.

use serde_json::Value;

use crate::Error;

/// Deepest nesting accepted. Kubernetes objects (CRD schemas included) stay far below it; a hostile file
/// nested thousands deep is refused at once instead of costing time and stack.
pub const MAX_DEPTH: usize = 256;

/// The reader and the JSON value it builds recurse once per level; this much stack holds [`MAX_DEPTH`] levels
/// with room to spare in any build (a test thread has 2 MiB, not enough for an unoptimised build).
const PARSER_STACK_BYTES: usize = 64 << 20;

const BYTE_ORDER_MARK: char = '\u{feff}';

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
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_depth: MAX_DEPTH,
                flow_nesting_limit: MAX_DEPTH,
                max_documents: 100_000,
            },
            legacy_octal_numbers: true,
        };
        serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|e| {
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
