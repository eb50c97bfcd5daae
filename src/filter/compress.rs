//! `compress`: response bodies compressed with zstd, brotli or gzip for
//! clients whose Accept-Encoding allows it.
//!
//! The request phase picks the coding (the client's highest `q`, ties by
//! the configured order; `q=0` and `*` honoured) and leaves a [`Plan`] in
//! the edits; the response head decides ([`applies`]): an HTTP/1.1 client,
//! not HEAD, a status with a body (not 1xx, 204, 206, 304), no
//! Content-Encoding yet, no `Cache-Control: no-transform`, a configured
//! media type, and a Content-Length of at least `min_length` (a chunked or
//! close-delimited body of unknown length is compressed). Then the head
//! loses Content-Length (the body goes chunked) and Accept-Ranges, gains Content-Encoding and
//! `Vary: Accept-Encoding`, a strong ETag becomes weak, and the body runs
//! through an [`Encoder`] (`crate::http` streams it). Such a body is read
//! and written by the worker: it is never spliced.

use std::io::Write as _;
use std::rc::Rc;

use super::{Edits, Filter, Request, Verdict};
use crate::config::middleware::{Compress, Encoding};
use crate::http::head::{HeaderSpan, ResponseFraming, ResponseHead};

/// What the request phase chose; checked against the response head.
#[derive(Clone)]
pub struct Plan {
    pub encoding: Encoding,
    pub cfg: Rc<Compress>,
}

pub struct CompressFilter {
    cfg: Rc<Compress>,
}

impl CompressFilter {
    pub fn new(cfg: &Compress) -> CompressFilter {
        CompressFilter {
            cfg: Rc::new(cfg.clone()),
        }
    }
}

impl Filter for CompressFilter {
    fn request_filter(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        if req.method != b"HEAD" {
            if let Some(encoding) = choose(&self.cfg.encodings, req.headers(b"accept-encoding")) {
                e.compress = Some(Plan {
                    encoding,
                    cfg: self.cfg.clone(),
                });
            }
        }
        Verdict::Continue
    }
}

/// The coding to use for these Accept-Encoding values, if any.
pub fn choose<'a>(
    offered: &[Encoding],
    accept: impl Iterator<Item = &'a [u8]>,
) -> Option<Encoding> {
    // q in thousandths, per offered coding; None: not mentioned.
    let mut q = [None::<u16>; 3];
    let mut star = None::<u16>;
    for value in accept {
        for item in value.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let token = parts.next().unwrap_or(&[]).trim_ascii();
            let mut weight = 1000u16;
            for p in parts {
                let p = p.trim_ascii();
                if let Some(v) = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q=")) {
                    weight = parse_q(v).unwrap_or(0);
                }
            }
            if token == b"*" {
                star = Some(weight);
            }
            for (i, enc) in offered.iter().enumerate().take(3) {
                if token.eq_ignore_ascii_case(enc.token().as_bytes()) {
                    q[i] = Some(weight);
                }
            }
        }
    }
    let mut best: Option<(u16, Encoding)> = None;
    for (i, enc) in offered.iter().enumerate().take(3) {
        let w = q[i].or(star).unwrap_or(0);
        if w > 0 && best.is_none_or(|(bw, _)| w > bw) {
            best = Some((w, *enc));
        }
    }
    best.map(|(_, e)| e)
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths.
fn parse_q(v: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(v.trim_ascii()).ok()?;
    let f: f32 = s.parse().ok()?;
    (0.0..=1.0)
        .contains(&f)
        .then(|| (f * 1000.0).round() as u16)
}

/// Whether the response whose head is `head` (parsed from `buf`) gets
/// compressed under `plan`.
pub fn applies(
    plan: &Plan,
    head: &ResponseHead,
    buf: &[u8],
    spans: &[HeaderSpan],
    client_http11: bool,
) -> bool {
    if !client_http11 || matches!(head.status, 100..=199 | 204 | 206 | 304) {
        return false;
    }
    match head.framing {
        ResponseFraming::Length(n) if n > 0 && n >= plan.cfg.min_length => {}
        ResponseFraming::Chunked | ResponseFraming::UntilClose => {}
        _ => return false,
    }
    let mut media = None;
    for h in head.headers(spans) {
        let name = h.name(buf);
        let value = h.value(buf);
        if name.eq_ignore_ascii_case(b"content-encoding") {
            return false;
        }
        if name.eq_ignore_ascii_case(b"cache-control")
            && value
                .split(|&b| b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
        {
            return false;
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            let v = value
                .split(|&b| b == b';')
                .next()
                .unwrap_or(&[])
                .trim_ascii();
            media = Some(v);
        }
    }
    let Some(media) = media else { return false };
    plan.cfg
        .content_types
        .iter()
        .any(|t| match t.strip_suffix("/*") {
            Some(ty) => {
                media.len() > ty.len()
                    && media[..ty.len()].eq_ignore_ascii_case(ty.as_bytes())
                    && media[ty.len()] == b'/'
            }
            None => media.eq_ignore_ascii_case(t.as_bytes()),
        })
}

/// Writes the head changes of a compressed response (after `apply`ing
/// the names `head_removed` returns): the new fields.
pub fn head_lines(
    plan: &Plan,
    head: &ResponseHead,
    buf: &[u8],
    spans: &[HeaderSpan],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"Content-Encoding: ");
    out.extend_from_slice(plan.encoding.token().as_bytes());
    out.extend_from_slice(b"\r\nVary: Accept-Encoding\r\nTransfer-Encoding: chunked\r\n");
    for h in head.headers(spans) {
        if h.name(buf).eq_ignore_ascii_case(b"etag") {
            let v = h.value(buf);
            out.extend_from_slice(b"ETag: ");
            if !v.starts_with(b"W/") {
                out.extend_from_slice(b"W/");
            }
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Fields removed from a compressed response's head (lowercase); byte
/// ranges of the encoded body are not offered.
pub fn head_removed() -> [Vec<u8>; 4] {
    [
        b"content-length".to_vec(),
        b"transfer-encoding".to_vec(),
        b"etag".to_vec(),
        b"accept-ranges".to_vec(),
    ]
}

/// A streaming encoder writing into a buffer the caller drains.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    pub fn new(e: Encoding) -> std::io::Result<Encoder> {
        Ok(match e {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(4),
            )),
            Encoding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                4,
                22,
            ))),
        })
    }

    /// Compresses `data`; whatever output is ready is appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(w) => {
                w.write_all(data)?;
                out.append(w.get_mut());
            }
            Encoder::Zstd(w) => {
                w.write_all(data)?;
                out.append(w.get_mut());
            }
            Encoder::Brotli(w) => {
                w.write_all(data)?;
                out.append(w.get_mut());
            }
        }
        Ok(())
    }

    /// Ends the stream; the rest of the output is appended to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut rest = match self {
            Encoder::Gzip(w) => w.finish()?,
            Encoder::Zstd(w) => w.finish()?,
            Encoder::Brotli(w) => w.into_inner(),
        };
        out.append(&mut rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_choice() {
        use Encoding::*;
        let all = [Zstd, Brotli, Gzip];
        let pick = |v: &str| choose(&all, std::iter::once(v.as_bytes()));
        assert_eq!(pick("gzip, deflate, br, zstd"), Some(Zstd));
        assert_eq!(pick("gzip"), Some(Gzip));
        assert_eq!(pick("gzip;q=1, br;q=0.5"), Some(Gzip));
        assert_eq!(pick("zstd;q=0, gzip"), Some(Gzip));
        assert_eq!(pick("*"), Some(Zstd));
        assert_eq!(pick("*;q=0, br"), Some(Brotli));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick(""), None);
        assert_eq!(choose(&[Gzip], std::iter::once(&b"zstd, br"[..])), None);
    }

    #[test]
    fn encoders_round_trip() {
        let text = "hello compressed world ".repeat(500);
        for e in [Encoding::Gzip, Encoding::Zstd, Encoding::Brotli] {
            let mut enc = Encoder::new(e).unwrap();
            let mut out = Vec::new();
            for part in text.as_bytes().chunks(1000) {
                enc.push(part, &mut out).unwrap();
            }
            enc.finish(&mut out).unwrap();
            assert!(out.len() < text.len() / 10, "{e:?}: {}", out.len());
            let back = match e {
                Encoding::Gzip => {
                    let mut d = flate2::read::GzDecoder::new(&out[..]);
                    let mut s = Vec::new();
                    std::io::Read::read_to_end(&mut d, &mut s).unwrap();
                    s
                }
                Encoding::Zstd => zstd::stream::decode_all(&out[..]).unwrap(),
                Encoding::Brotli => {
                    let mut s = Vec::new();
                    brotli::BrotliDecompress(&mut &out[..], &mut s).unwrap();
                    s
                }
            };
            assert_eq!(back, text.as_bytes(), "{e:?}");
        }
    }
}
