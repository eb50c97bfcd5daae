//! Applies [`super::Edits`] to a head the proxy has written: drops the
//! fields named for removal, appends the added lines. In place, one pass,
//! no allocation.

/// `out[start..]` holds one complete head (start line, fields, empty line)
/// and nothing after it. Fields named in `remove` (lowercase) are dropped,
/// `add` (complete `Name: value\r\n` lines) goes after the last field.
pub fn apply(out: &mut Vec<u8>, start: usize, remove: &[Vec<u8>], add: &[u8]) {
    if remove.is_empty() && add.is_empty() {
        return;
    }
    let Some(first) = find_crlf(out, start) else {
        return;
    };
    let mut w = first + 2;
    let mut r = w;
    while let Some(e) = find_crlf(out, r) {
        if e == r {
            break; // the empty line
        }
        let line = out.get(r..e).unwrap_or(&[]);
        let name = line.split(|&b| b == b':').next().unwrap_or(&[]);
        let drop = remove.iter().any(|n| n.eq_ignore_ascii_case(name));
        if !drop {
            out.copy_within(r..e + 2, w);
            w += e + 2 - r;
        }
        r = e + 2;
    }
    out.truncate(w);
    out.extend_from_slice(add);
    out.extend_from_slice(b"\r\n");
}

/// Replaces the request-target in the request line at `out[start..]`
/// (between its first and last space).
pub fn replace_target(out: &mut Vec<u8>, start: usize, target: &[u8]) {
    let Some(end) = find_crlf(out, start) else {
        return;
    };
    let line = out.get(start..end).unwrap_or(&[]);
    let (Some(a), Some(b)) = (memchr::memchr(b' ', line), memchr::memrchr(b' ', line)) else {
        return;
    };
    if a >= b {
        return;
    }
    out.splice(start + a + 1..start + b, target.iter().copied());
}

fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(b.get(from..)?, b"\r\n").map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::apply;

    #[test]
    fn removes_and_adds() {
        let mut o =
            b"xxGET / HTTP/1.1\r\nHost: a\r\nX-Debug: 1\r\nx-debug: 2\r\nB: 2\r\n\r\n".to_vec();
        apply(&mut o, 2, &[b"x-debug".to_vec()], b"X-Env: prod\r\n");
        assert_eq!(
            o,
            b"xxGET / HTTP/1.1\r\nHost: a\r\nB: 2\r\nX-Env: prod\r\n\r\n".to_vec()
        );
        let mut o = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        apply(&mut o, 0, &[], b"A: b\r\n");
        assert_eq!(o, b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n".to_vec());
        let mut o = b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n".to_vec();
        apply(&mut o, 0, &[b"a".to_vec()], b"");
        assert_eq!(o, b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
    }
}
