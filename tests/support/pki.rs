//! A test PKI made with the `openssl` CLI at test time (tests/tls.rs): an
//! ECDSA CA; leaves with PKCS#8 ECDSA, PKCS#1 RSA and SEC1 ECDSA keys; a
//! client certificate for mTLS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs a command, returns (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

fn openssl(dir: &Path, args: &[&str]) {
    let (ok, out) = run(Command::new("openssl").current_dir(dir).args(args));
    assert!(ok, "openssl {args:?}: {out}");
}

/// A test PKI in a temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=ringmesh test CA",
                "-days",
                "30",
                "-out",
                "ca.pem",
            ],
        );
        let pki = Pki { dir };
        pki.leaf("a", "a.example.com", &["a.example.com"], "ec8", 30);
        pki.leaf("b", "b.example.com", &["b.example.com"], "rsa1", 30);
        pki.leaf("w", "wild", &["*.wild.test"], "sec1", 30);
        pki.leaf("client", "client-one", &[], "ec8", 30);
        pki
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub fn p(&self, f: &str) -> String {
        self.path(f).display().to_string()
    }

    /// `name.key` (kind: ec8 = PKCS#8 ECDSA, rsa1 = PKCS#1 RSA, sec1 = SEC1
    /// ECDSA) and `name.pem` (leaf + CA chain). A SAN that parses as an IP
    /// address is an IP SAN, else a DNS one.
    pub fn leaf(&self, name: &str, cn: &str, sans: &[&str], kind: &str, days: u32) {
        let d = self.dir.path();
        let key = format!("{name}.key");
        match kind {
            "ec8" => openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &key,
                ],
            ),
            "rsa1" => openssl(d, &["genrsa", "-traditional", "-out", &key, "2048"]),
            "sec1" => openssl(
                d,
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &key,
                ],
            ),
            _ => unreachable!(),
        }
        let csr = format!("{name}.csr");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={cn}/O=ringmesh"),
                "-out",
                &csr,
            ],
        );
        let ext = format!("{name}.ext");
        let mut e = String::new();
        if !sans.is_empty() {
            let list: Vec<String> = sans
                .iter()
                .map(|s| match s.parse::<std::net::IpAddr>() {
                    Ok(_) => format!("IP:{s}"),
                    Err(_) => format!("DNS:{s}"),
                })
                .collect();
            e.push_str(&format!("subjectAltName={}\n", list.join(",")));
        }
        e.push_str("basicConstraints=CA:FALSE\n");
        std::fs::write(d.join(&ext), e).unwrap();
        let crt = format!("{name}.crt");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                &days.to_string(),
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
        let chain = [
            std::fs::read(d.join(&crt)).unwrap(),
            std::fs::read(d.join("ca.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(d.join(format!("{name}.pem")), chain).unwrap();
    }

    pub fn cert(&self, name: &str) -> String {
        format!(
            r#"{{"cert": "{}", "key": "{}"}}"#,
            self.p(&format!("{name}.pem")),
            self.p(&format!("{name}.key"))
        )
    }
}
