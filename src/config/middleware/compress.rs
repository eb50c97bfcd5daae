//! Validation of `compress` (response body compression).
//!
//! ```json
//! {"type": "compress", "encodings": ["zstd", "br", "gzip"], "min_length": 1024,
//!  "content_types": ["text/*", "application/json"]}
//! ```

use serde_json::{Map, Value};

use super::{Middleware, V};

/// A content coding ringmesh can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Zstd,
    Brotli,
    Gzip,
}

impl Encoding {
    /// The token in Accept-Encoding and Content-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// A `compress` middleware, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compress {
    /// Codings offered, in ringmesh's order of preference.
    pub encodings: Vec<Encoding>,
    /// Responses with a Content-Length below this stay as they are.
    pub min_length: u64,
    /// Media types compressed (lowercase; `type/*` matches a whole type).
    pub content_types: Vec<String>,
}

/// Default `content_types`: text-like media.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "image/svg+xml",
];

impl V<'_> {
    pub(super) fn compress(&mut self, m: &Map<String, Value>, path: &str) -> Option<Middleware> {
        self.fields(m, path, &["encodings", "min_length", "content_types"]);
        let mut encodings = Vec::new();
        for (i, e) in self
            .names(m, path, "encodings", |_| true)
            .iter()
            .enumerate()
        {
            let enc = match e.as_str() {
                "zstd" => Encoding::Zstd,
                "br" => Encoding::Brotli,
                "gzip" => Encoding::Gzip,
                other => {
                    self.err(
                        format!("{path}.encodings[{i}]"),
                        format!("{other:?} is not \"zstd\", \"br\" or \"gzip\""),
                    );
                    continue;
                }
            };
            if !encodings.contains(&enc) {
                encodings.push(enc);
            }
        }
        if !m.contains_key("encodings") {
            encodings = vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];
        } else if encodings.is_empty() {
            self.err(
                format!("{path}.encodings"),
                "at least one of zstd, br, gzip",
            );
        }
        let min_length = match m.get("min_length") {
            None | Some(Value::Null) => 1024,
            Some(v) => v.as_u64().unwrap_or_else(|| {
                self.err(
                    format!("{path}.min_length"),
                    format!("{v} is not a byte count (0 or more)"),
                );
                1024
            }),
        };
        let mut content_types: Vec<String> = self
            .names(m, path, "content_types", |t| {
                let Some((a, b)) = t.split_once('/') else {
                    return false;
                };
                let tok = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                };
                tok(a) && (b == "*" || tok(b))
            })
            .into_iter()
            .map(|t| t.to_ascii_lowercase())
            .collect();
        if !m.contains_key("content_types") {
            content_types = DEFAULT_TYPES.iter().map(|t| t.to_string()).collect();
        } else if content_types.is_empty() {
            self.err(
                format!("{path}.content_types"),
                "at least one media type like \"text/*\"",
            );
        }
        Some(Middleware::Compress(Box::new(Compress {
            encodings,
            min_length,
            content_types,
        })))
    }
}
