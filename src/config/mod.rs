//! Configuration: `config.json` (GopherMesh-compatible) to an immutable [`Snapshot`].
//!
//! File -> `serde_json::Value` -> [`validate::parse`] -> [`Snapshot`]. The data
//! plane only ever sees snapshots.

pub mod access_log;
pub mod discover;
pub mod edge;
pub mod gateway;
pub mod http2;
pub mod middleware;
pub mod snapshot;
pub mod source;
pub mod tls;
pub mod upstream_tls;
pub mod validate;

use std::io;
use std::path::Path;

pub use http2::Http2;
pub use snapshot::{
    Backend, Balance, Dashboard, HealthCheck, Limits, ListenerSpec, Protocol, Route, SendProxy,
    Snapshot, Timeouts, UpstreamKeepalive, DEFAULT_READY_TIMEOUT,
};
pub use validate::{parse, parse_in, ConfigError, ConfigErrors};

/// The config written when `ringmesh run` finds no file (as GopherMesh's
/// LoadConfig does). Keys starting with `//` are comments.
pub const DEFAULT_CONFIG: &str = r#"{
  "//": "ringmesh config. Keys starting with // are comments. Reference: README.md, section Configuration.",
  "dashboard_host": "127.0.0.1",
  "dashboard_port": "9999",
  "trusted_origins": ["http://127.0.0.1:9999"],
  "service_name": "ringmesh",
  "//workers": "worker threads; 0 = one per online CPU",
  "workers": 0,
  "//listen_host": "address every route listens on unless its key is ip:port",
  "listen_host": "0.0.0.0",
  "shutdown_grace": "30s",
  "routes": {
    "8081": {
      "name": "Internal-Healthcheck",
      "protocol": "http",
      "load_balance": "round_robin",
      "timeouts": { "connect": "5s", "idle": "10m" },
      "backends": [
        { "name": "dashboard", "cmd": "internal", "internal_host": "127.0.0.1", "internal_port": "9999" }
      ]
    }
  }
}
"#;

/// Why a config could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Io(io::Error),
    Invalid(ConfigErrors),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "{e}"),
            LoadError::Invalid(errs) => write!(f, "{errs}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<(Snapshot, String), LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
    let snap = parse_in(&text, config_dir(path)).map_err(LoadError::Invalid)?;
    Ok((snap, text))
}

/// The directory relative paths in the config at `path` start from.
pub fn config_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Like [`load`], but writes [`DEFAULT_CONFIG`] first when the file does not exist.
/// Returns whether the default was written.
pub fn load_or_init(path: &Path) -> Result<(Snapshot, String, bool), LoadError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(path, DEFAULT_CONFIG.as_bytes()).map_err(LoadError::Io)?;
            let (s, t) = load(path)?;
            Ok((s, t, true))
        }
        _ => {
            let (s, t) = load(path)?;
            Ok((s, t, false))
        }
    }
}

/// Writes a file by rename so readers never see half of it.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "config path has no file name")
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests;
