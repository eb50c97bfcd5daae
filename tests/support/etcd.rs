//! A real etcd (Debian's etcd-server) for tests: temporary data dir, free
//! client and peer ports on loopback, stopped by PID.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmesh::config::source::EtcdSource;
use ringmesh::fleet::etcd::Etcd;

pub struct EtcdServer {
    pub client_port: u16,
    pub peer_port: u16,
    pub dir: tempfile::TempDir,
    /// Serving TLS with client-certificate auth (see [`EtcdServer::start_tls`]).
    pub tls: Option<EtcdTlsFiles>,
    child: Option<Child>,
}

/// PEM files for an etcd serving https with `--client-cert-auth`.
#[derive(Clone)]
pub struct EtcdTlsFiles {
    /// The CA that signed both the server's and the client's certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// What this harness's own client presents.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers (None when the binary is missing).
    pub fn start() -> Option<EtcdServer> {
        Self::start_with(None)
    }

    /// Starts etcd serving https only, requiring a client certificate
    /// signed by `tls.ca` (`--client-cert-auth --trusted-ca-file`).
    pub fn start_tls(tls: EtcdTlsFiles) -> Option<EtcdServer> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<EtcdTlsFiles>) -> Option<EtcdServer> {
        if Command::new("etcd").arg("--version").output().is_err() {
            return None;
        }
        let mut s = EtcdServer {
            client_port: super::free_port(),
            peer_port: super::free_port(),
            dir: tempfile::tempdir().unwrap(),
            tls,
            child: None,
        };
        s.restart();
        Some(s)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// (Re)starts etcd on the same ports and data dir; waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = Command::new("etcd");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let c = self.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.get("/probe").is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not answer; log:\n{}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL by PID, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn source(&self, prefix: &str) -> EtcdSource {
        EtcdSource {
            endpoints: vec![format!("127.0.0.1:{}", self.client_port)],
            prefix: prefix.into(),
            username: None,
            password: None,
            node_id: None,
            cache_file: None,
            tls: self
                .tls
                .as_ref()
                .map(|t| ringmesh::config::source::EtcdTls {
                    ca_file: t.ca.clone(),
                    cert_file: Some(t.client_cert.clone()),
                    key_file: Some(t.client_key.clone()),
                }),
        }
    }

    pub fn client(&self) -> Etcd {
        Etcd::new(&self.source("/"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
