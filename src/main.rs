//! The `ringmesh` binary: CLI only. Parses arguments, calls the library, maps
//! errors to exit codes (1: invalid config for `check`, 64: bad config for `run`,
//! 70: runtime failure).

mod tune;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ringmesh::{cli, config};
use ringmesh::{Engine, EngineOptions, IoMode};

#[global_allocator]
static GLOBAL: ringmesh::alloc::Mimalloc = ringmesh::alloc::Mimalloc;

#[derive(Parser)]
#[command(
    name = "ringmesh",
    version,
    about = "Thread-per-core io_uring TCP/HTTP proxy and gateway"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (or a tracing filter). Env: RINGMESH_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy in the foreground (writes a default config if the file is missing).
    Run {
        /// Config file.
        #[arg(short, long, default_value = "config.json")]
        config: PathBuf,
        /// I/O driver: io_uring, epoll, or io_uring with epoll fallback.
        #[arg(long, value_enum, default_value_t = Io::Auto)]
        io: Io,
        /// Worker threads (overrides the config; 0 = one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// Routes from etcd (URL[,URL]): sets config_source.etcd.endpoints; the
        /// file keeps the node-local settings.
        #[arg(long)]
        etcd: Option<String>,
        /// Key prefix in etcd (routes at <prefix>routes); with --etcd.
        #[arg(long, requires = "etcd")]
        etcd_prefix: Option<String>,
        /// CA file for https:// etcd endpoints (sets config_source.etcd.ca_file).
        #[arg(long, requires = "etcd")]
        etcd_ca: Option<PathBuf>,
        /// Client certificate for etcd's --client-cert-auth; with --etcd-key.
        #[arg(long, requires = "etcd")]
        etcd_cert: Option<PathBuf>,
        /// Client key; with --etcd-cert.
        #[arg(long, requires = "etcd")]
        etcd_key: Option<PathBuf>,
    },
    /// List the nodes registered in etcd (<prefix>nodes/): address, version,
    /// config revision, uptime, open connections (exit 2: etcd unreachable).
    Fleet {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Routes kept in etcd (<prefix>routes) for a fleet.
    Routes {
        #[command(subcommand)]
        cmd: RoutesCmd,
    },
    /// Validate a config file and exit: 0 when valid, 1 with every error listed.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "config.json")]
        config: PathBuf,
    },
    /// Print the captured stdout/stderr of a route's backend processes
    /// (exit 0; 1 when the API refuses, e.g. unknown route; 2 when it cannot be reached).
    Logs {
        /// Route key (e.g. 8080) or name.
        route: String,
        /// Keep printing new lines as they arrive.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop a route's backend processes (or one backend's); the next connection
    /// starts them again. Exit codes as for `logs`.
    Kill {
        /// Route key (e.g. 8080) or name.
        route: String,
        /// Backend name (default: every backend of the route).
        backend: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show routes, backends and counters of a running ringmesh (exit 2: API unreachable).
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the API's raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a running ringmesh reload its config file (exit 1: refused, errors listed;
    /// 2: API unreachable).
    Reload {
        #[command(flatten)]
        api: ApiArgs,
        /// Send this file's text as the new config (PUT /api/config: validated, written
        /// to the running process's config file, applied) instead of re-reading its file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Zero-downtime binary restart: the running ringmesh starts its binary (as
    /// installed now) with the same arguments, hands it the listening sockets,
    /// then drains and exits (exit 1: the new process failed, the old one serves on).
    Upgrade {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the WebSocket sessions of gateway routes (exit codes as for `logs`).
    Sessions {
        /// Only this route (name).
        #[arg(long)]
        route: Option<String>,
        /// Only sessions bound to this user.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions in this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Push a text message to sessions: one of --channel, --user, --route, --session, --all.
    Publish {
        #[arg(long, group = "target")]
        channel: Option<String>,
        #[arg(long, group = "target")]
        user: Option<String>,
        #[arg(long, group = "target")]
        route: Option<String>,
        #[arg(long, group = "target")]
        session: Option<String>,
        #[arg(long, group = "target")]
        all: bool,
        /// The message.
        #[arg(long)]
        text: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Act on one session: `ringmesh session close ID`.
    Session {
        #[command(subcommand)]
        cmd: SessionCmd,
    },
}

#[derive(Subcommand)]
enum SessionCmd {
    /// Close a session with a close code and reason.
    Close {
        id: String,
        #[arg(long, default_value_t = 1000)]
        code: u16,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum RoutesCmd {
    /// Print the routes JSON (its revision on stderr).
    Get {
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Validate FILE (routes, or a config.json whose routes are taken) and write it
    /// with compare-and-swap (exit 1: invalid or conflict; 2: etcd unreachable).
    Push {
        file: PathBuf,
        /// Write only if the key is still at this revision (from `routes get`);
        /// default: the revision read just before writing.
        #[arg(long)]
        expect_revision: Option<i64>,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// Where etcd is, for `fleet` and `routes`.
#[derive(clap::Args)]
struct EtcdArgs {
    /// etcd URL[,URL] (default: the config file's config_source).
    #[arg(long)]
    etcd: Option<String>,
    /// Key prefix (default /ringmesh/ or the config file's).
    #[arg(long)]
    etcd_prefix: Option<String>,
    /// etcd user (password from --etcd-password or RINGMESH_ETCD_PASSWORD).
    #[arg(long)]
    etcd_user: Option<String>,
    #[arg(long)]
    etcd_password: Option<String>,
    /// CA file (PEM) for https:// endpoints (default: the system bundle).
    #[arg(long)]
    etcd_ca: Option<String>,
    /// Client certificate (PEM) for etcd's --client-cert-auth; with --etcd-key.
    #[arg(long)]
    etcd_cert: Option<String>,
    /// Client key (PEM); with --etcd-cert.
    #[arg(long)]
    etcd_key: Option<String>,
    /// Config file whose config_source locates etcd when --etcd is not given.
    #[arg(short, long, default_value = "config.json")]
    config: PathBuf,
}

impl EtcdArgs {
    fn source(self) -> Result<ringmesh::config::source::EtcdSource, ExitCode> {
        cli::fleet::etcd_source(
            self.etcd.as_deref(),
            self.etcd_prefix.as_deref(),
            self.etcd_user,
            self.etcd_password,
            &cli::fleet::TlsFlags {
                ca: self.etcd_ca,
                cert: self.etcd_cert,
                key: self.etcd_key,
            },
            &self.config,
        )
        .map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(cli::UNREACHABLE)
        })
    }
}

/// How the CLI finds a running ringmesh's API.
#[derive(clap::Args)]
struct ApiArgs {
    /// Config file whose dashboard_host/dashboard_port (and api_token) locate the API.
    #[arg(short, long, default_value = "config.json")]
    config: PathBuf,
    /// API base URL (http://host:port); overrides the config file.
    #[arg(long)]
    api: Option<String>,
    /// Bearer token (else RINGMESH_API_TOKEN, else the config's api_token).
    #[arg(long)]
    token: Option<String>,
}

impl ApiArgs {
    fn target(self) -> Result<cli::Api, ExitCode> {
        cli::target(&self.config, self.api.as_deref(), self.token).map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(cli::UNREACHABLE)
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Io {
    Auto,
    Uring,
    Epoll,
}

fn init_logs(level: Option<&str>) {
    let filter = level
        .map(str::to_string)
        .or_else(|| std::env::var("RINGMESH_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // journald adds its own timestamps; a terminal gets them from us.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    if journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// mimalloc's `arena_eager_commit` (option 4 in mimalloc v2's `mi_option_e`).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Eager arena commit makes RSS start at ~12 MiB and grow in 4 MiB steps: with
/// 2,000 idle tunnels it showed 4.2 KiB per connection where the real figure is
/// ~1.9 KiB. Committing on demand costs nothing on the request path (memory
/// stays committed once used). The option must be set before mimalloc reserves
/// its first arena, which happens at the first allocation, before `main`: so
/// this runs from a prioritized `.init_array` entry, ahead of every
/// unprioritized constructor (mimalloc's included).
extern "C" fn early_allocator_options() {
    // SAFETY: mi_option_set only stores an integer option; no pointers, no allocation.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[link_section = ".init_array.00100"]
static EARLY_ALLOCATOR_OPTIONS: extern "C" fn() = early_allocator_options;

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.cmd {
        Cmd::Logs { route, follow, api } => match api.target() {
            Ok(a) => cli::procs::logs(&a, &route, follow),
            Err(code) => code,
        },
        Cmd::Kill {
            route,
            backend,
            api,
        } => match api.target() {
            Ok(a) => cli::procs::kill(&a, &route, backend.as_deref()),
            Err(code) => code,
        },
        Cmd::Status { api, json } => match api.target() {
            Ok(a) => ExitCode::from(cli::status(&a, json)),
            Err(code) => code,
        },
        Cmd::Upgrade { api } => match api.target() {
            Ok(a) => ExitCode::from(cli::upgrade(&a)),
            Err(code) => code,
        },
        Cmd::Sessions {
            route,
            user,
            channel,
            json,
            api,
        } => match api.target() {
            Ok(a) => {
                let f = cli::sessions::ListFilter {
                    route,
                    user,
                    channel,
                };
                ExitCode::from(cli::sessions::sessions(&a, &f, json))
            }
            Err(code) => code,
        },
        Cmd::Publish {
            channel,
            user,
            route,
            session,
            all,
            text,
            api,
        } => {
            let target = [
                ("channel", channel),
                ("user", user),
                ("route", route),
                ("session", session),
            ]
            .into_iter()
            .find_map(|(k, v)| v.map(|v| (k, v)))
            .or(all.then(|| ("all", String::new())));
            let Some((kind, value)) = target else {
                eprintln!("publish: give --channel, --user, --route, --session or --all");
                return ExitCode::from(cli::REFUSED);
            };
            match api.target() {
                Ok(a) => ExitCode::from(cli::sessions::publish(&a, kind, &value, &text)),
                Err(code) => code,
            }
        }
        Cmd::Session {
            cmd:
                SessionCmd::Close {
                    id,
                    code,
                    reason,
                    api,
                },
        } => match api.target() {
            Ok(a) => ExitCode::from(cli::sessions::close(&a, &id, code, &reason)),
            Err(code) => code,
        },
        Cmd::Reload { api, file } => match api.target() {
            Ok(a) => ExitCode::from(cli::reload(&a, file.as_deref())),
            Err(code) => code,
        },
        Cmd::Fleet { etcd, json } => match etcd.source() {
            Ok(s) => ExitCode::from(cli::fleet::fleet(&s, json)),
            Err(code) => code,
        },
        Cmd::Routes {
            cmd: RoutesCmd::Get { etcd },
        } => match etcd.source() {
            Ok(s) => ExitCode::from(cli::fleet::routes_get(&s)),
            Err(code) => code,
        },
        Cmd::Routes {
            cmd:
                RoutesCmd::Push {
                    file,
                    expect_revision,
                    etcd,
                },
        } => match etcd.source() {
            Ok(s) => ExitCode::from(cli::fleet::routes_push(&s, &file, expect_revision)),
            Err(code) => code,
        },
        Cmd::Check { config: path } => match config::load(&path) {
            Ok((snap, _)) => {
                println!(
                    "{}: ok ({} route(s), {} listener(s))",
                    path.display(),
                    snap.routes.len(),
                    snap.listeners.len()
                );
                for w in ringmesh::tls::expiry_warnings(&snap, ringmesh::tls::EXPIRY_WARNING) {
                    println!("  warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid config", path.display());
                for line in e.to_string().lines() {
                    eprintln!("  {line}");
                }
                ExitCode::from(1)
            }
        },
        Cmd::Run {
            config: path,
            io,
            workers,
            etcd,
            etcd_prefix,
            etcd_ca,
            etcd_cert,
            etcd_key,
        } => {
            // Before anything reads the environment or starts a thread.
            tune::copy_tuning();
            init_logs(args.log.as_deref());
            // Started by `ringmesh upgrade`: take the old process's sockets first.
            let inherited = match ringmesh::control::upgrade::Inherited::from_env() {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!("upgrade handover failed: {e}");
                    return ExitCode::from(70);
                }
            };
            // `--etcd` fills config_source before validation (the file may name no endpoints).
            let loaded = match etcd.as_deref() {
                None => config::load_or_init(&path).map_err(|e| e.to_string()),
                Some(urls) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("{e}"))
                    .and_then(|t| {
                        ringmesh::fleet::with_etcd_flags(&t, urls, etcd_prefix.as_deref())
                    })
                    .and_then(|t| {
                        ringmesh::fleet::with_etcd_tls_flags(
                            &t,
                            [
                                etcd_ca.as_deref(),
                                etcd_cert.as_deref(),
                                etcd_key.as_deref(),
                            ],
                        )
                    })
                    .and_then(|t| {
                        config::parse_in(&t, config::config_dir(&path))
                            .map(|s| (s, t, false))
                            .map_err(|e| e.to_string())
                    }),
            };
            let (snap, text) = match loaded {
                Ok((snap, text, written)) => {
                    if written {
                        tracing::info!(
                            "{} did not exist; wrote a default config there",
                            path.display()
                        );
                    }
                    (snap, text)
                }
                Err(e) => {
                    tracing::error!("{}: invalid config", path.display());
                    for line in e.lines() {
                        tracing::error!("  {line}");
                    }
                    return ExitCode::from(64);
                }
            };
            let (snap, text, fleet) = ringmesh::fleet::bootstrap(snap, text, &path);
            let opts = EngineOptions {
                io: match io {
                    Io::Auto => IoMode::Auto,
                    Io::Uring => IoMode::Uring,
                    Io::Epoll => IoMode::Epoll,
                },
                workers,
                handle_signals: true,
                config_text: text,
                config_path: Some(path.clone()),
                api_token: std::env::var("RINGMESH_API_TOKEN")
                    .ok()
                    .filter(|t| !t.trim().is_empty()),
                inherited,
                fleet,
            };
            match Engine::new(snap, opts).run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(70)
                }
            }
        }
    }
}
