//! Verifying an htpasswd entry's hash, for every format Debian's
//! `htpasswd` (apache2-utils) writes:
//!
//! | htpasswd | entry | verified with |
//! |---|---|---|
//! | `-B` | `$2y$...` bcrypt | the `bcrypt` crate |
//! | `-m` (default) | `$apr1$salt$...` Apache MD5 | Apache's MD5-crypt variant over the `md-5` crate's MD5 |
//! | `-2`, `-5` | `$5$...`, `$6$...` SHA-crypt | the system's libcrypt (libxcrypt) |
//! | `-d` | 13 characters, DES crypt | the system's libcrypt |
//! | `-s` | `{SHA}base64` | the `sha1` crate |
//! | `-p` | the password itself | a constant-time comparison |
//!
//! libxcrypt is what Apache's own `htpasswd` and `mod_authn_file` call for
//! the crypt formats; no maintained Rust crate verifies DES crypt or
//! Apache's `$apr1$` (see `Cargo.toml`). An entry that starts with `$` or
//! `{` but is none of these is refused when the file is loaded; any other
//! entry that is not 13 DES-crypt characters is plain text.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use base64::Engine as _;
use md5::Digest as _;
use subtle::ConstantTimeEq as _;

/// The kind of an htpasswd hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bcrypt,
    Apr1,
    /// `$1$`, `$5$`, `$6$` or DES: the system's crypt.
    Crypt,
    Sha1,
    Plain,
}

/// The kind of `hash`, or `None` for a scheme that is not supported.
pub fn kind(hash: &str) -> Option<Kind> {
    const CRYPT64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
        Some(Kind::Bcrypt)
    } else if hash.starts_with("$apr1$") {
        Some(Kind::Apr1)
    } else if ["$1$", "$5$", "$6$"].iter().any(|p| hash.starts_with(p))
        || hash.len() == 13 && hash.bytes().all(|b| CRYPT64.contains(&b))
    {
        Some(Kind::Crypt)
    } else if hash.starts_with("{SHA}") {
        Some(Kind::Sha1)
    } else if hash.starts_with('$') || hash.starts_with('{') || hash.is_empty() {
        None
    } else {
        Some(Kind::Plain)
    }
}

/// Whether `password` matches the htpasswd hash `hash`.
pub fn verify(password: &[u8], hash: &str) -> bool {
    match kind(hash) {
        Some(Kind::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        Some(Kind::Apr1) => apr1(password, hash).is_some_and(|h| eq(h.as_bytes(), hash.as_bytes())),
        Some(Kind::Crypt) => crypt(password, hash),
        Some(Kind::Sha1) => {
            let digest = sha1::Sha1::digest(password);
            let want = base64::engine::general_purpose::STANDARD.decode(hash[5..].trim());
            want.is_ok_and(|w| eq(&w, &digest))
        }
        Some(Kind::Plain) => eq(password, hash.as_bytes()),
        None => false,
    }
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Apache's MD5-crypt (`apr_md5_encode`): Poul-Henning Kamp's MD5-crypt
/// with the magic `$apr1$`. Returns the whole entry for `hash`'s salt.
fn apr1(password: &[u8], hash: &str) -> Option<String> {
    const MAGIC: &str = "$apr1$";
    let rest = hash.strip_prefix(MAGIC)?;
    let salt = rest.split('$').next()?;
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let mut alt = md5::Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut ctx = md5::Md5::new();
    ctx.update(password);
    ctx.update(MAGIC.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = md5::Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(37);
    out.push_str(MAGIC);
    out.push_str(std::str::from_utf8(salt).ok()?);
    out.push('$');
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    to64(u32::from(fin[11]), 2);
    Some(out)
}

/// `sizeof(struct crypt_data)` in libxcrypt (crypt.h: 384 + 384 + 512 +
/// 767 + 1 + 30720).
const CRYPT_DATA_SIZE: usize = 32768;

#[link(name = "crypt")]
extern "C" {
    /// libxcrypt's reentrant crypt with a caller-sized work area; NULL on
    /// failure (no "*0" failure token).
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
}

/// The system's crypt(3): `$1$`, `$5$`, `$6$` and DES entries.
fn crypt(password: &[u8], hash: &str) -> bool {
    let (Ok(phrase), Ok(setting)) = (CString::new(password), CString::new(hash)) else {
        return false;
    };
    let mut data = vec![0u8; CRYPT_DATA_SIZE];
    // SAFETY: `phrase` and `setting` are NUL-terminated and outlive the
    // call; `data` is a zeroed, writable buffer of exactly the size passed,
    // which is libxcrypt's `sizeof(struct crypt_data)` (crypt_rn fails
    // rather than overrun when the size is too small). The result is NULL
    // or points into `data`, which lives until after it is read below.
    let out = unsafe {
        crypt_rn(
            phrase.as_ptr(),
            setting.as_ptr(),
            data.as_mut_ptr().cast(),
            CRYPT_DATA_SIZE as c_int,
        )
    };
    if out.is_null() {
        return false;
    }
    // SAFETY: non-NULL results of crypt_rn are NUL-terminated strings
    // inside `data` (still alive here).
    let got = unsafe { CStr::from_ptr(out) };
    eq(got.to_bytes(), hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_htpasswd_writes() {
        // Each made by Debian's htpasswd (-nb with the flag shown) or
        // `openssl passwd -apr1`.
        let cases = [
            ("$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0", "password"), // openssl passwd -apr1 -salt xxxxxxxx
            ("vUk07faHMbFX2", "pw"),                               // -d
            (
                "$5$ejzUQRqd6PNdmun5$7/xtV8ZJ3bmCFQdUg0Tv.Z8pvoApGl49226U5Mre7q9",
                "pw",
            ), // -2
            ("{SHA}8Wyi36Noi/CMek4hVErxW9WYy3A=", "pw2"),          // -s
            (
                "$2y$05$VDRNsyGCDuRpkW0emaF4eurLQeuaNtj9wDKft4hJSZkcp3rMS.oxu",
                "secret",
            ), // -B -C 5
            ("pw", "pw"),                                          // -p
        ];
        for (hash, pw) in cases {
            assert!(kind(hash).is_some(), "{hash}");
            assert!(verify(pw.as_bytes(), hash), "{hash}");
            assert!(!verify(b"wrong", hash), "{hash}");
            assert!(!verify(b"", hash), "{hash}");
        }
        assert_eq!(kind("vUk07faHMbFX2"), Some(Kind::Crypt));
        assert_eq!(kind("plain-text"), Some(Kind::Plain));
        for bad in ["$9$x", "{SSHA}abc", "", "$apr1"] {
            assert!(!verify(b"x", bad), "{bad}");
        }
        assert_eq!(kind("$9$x"), None);
        assert_eq!(kind("{SSHA}x"), None);
        // A NUL in the password cannot reach libcrypt.
        assert!(!verify(b"p\0w", "vUk07faHMbFX2"));
    }
}
