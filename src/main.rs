//! The `refold-proxy` command: parse arguments, set up logging, run. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use refold_proxy::config::{parse_duration, Config, ConfigSource};
use refold_proxy::process::{reload, server, tls};
use refold_proxy::steps::identity;

mod demo;
use tracing_subscriber::EnvFilter;

/// The process's allocator. With glibc's malloc about half of the resident memory a
/// filled token cache held was free fragments between long-lived allocations (each
/// account's token and slot land among the request path's short-lived buffers);
/// jemalloc's size classes keep resident memory close to the live heap (BENCHMARKS.md,
/// "RSS per cached account").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Authenticating reverse proxy for the Refold API.
#[derive(Debug, Parser)]
#[command(name = "refold-proxy", version, about)]
struct Cli {
    /// The config file to run with [default: proxy.toml, or none when it does not exist:
    /// the defaults and REFOLD_PROXY__SECTION__KEY environment overrides].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate this config file (and the secrets it names) and exit.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Print the effective config (the file of --check-config or --config, environment
    /// overrides applied, every default filled in) as TOML, secrets left out, and exit.
    #[arg(long)]
    print_config: bool,
    /// Log line format (logs go to stderr; filter with RUST_LOG). `auto`: pretty on a
    /// terminal, JSON otherwise (a log file or a collector).
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stand-in Refold upstream and a proxy in front of it, and print a request to try.
    Demo {
        /// Where the demo proxy listens (another free port is used if this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run only the stand-in Refold upstream (without Refold's rate limits).
    MockUpstream {
        #[arg(long)]
        listen: SocketAddr,
        /// The API key the stand-in accepts (prefix `tk` = test, `pk` = production).
        #[arg(long, default_value = demo::DEMO_API_KEY)]
        api_key: String,
        /// Linked accounts that exist from the start (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = demo::DEMO_ACCOUNT)]
        accounts: Vec<String>,
    },
    /// Sign an app JWT with the configured HS secret (or the demo's), for trying a
    /// deployment by hand. Reads only the config's `[identity]` table and its secret.
    SignJwt {
        /// The linked account id the token names.
        #[arg(long)]
        sub: String,
        /// How long the token is valid (90s, 30m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Sign with the demo's secret and claims instead of the config's, for `demo`.
        #[arg(long)]
        demo: bool,
    },
    /// Make a self-signed certificate and key (ECDSA P-256) for trying HTTPS; development only.
    GenCert {
        /// A DNS name or IP address the certificate is for (repeat for more).
        #[arg(long = "host", value_name = "NAME", required = true)]
        hosts: Vec<String>,
        /// Directory to write cert.pem and key.pem to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace cert.pem and key.pem if they exist.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if cli.print_config && cli.check_config.is_none() {
        // Alone it prints without checking: the secrets need not be at hand.
        return print_config(ConfigSource::find(cli.config).path());
    }
    if let Some(path) = &cli.check_config {
        // The file, then what the steps would refuse to build from it (no network).
        let checked = Config::load(path).and_then(|config| {
            let warnings = reload::check(&config)?;
            Ok((config, warnings))
        });
        return match checked {
            Ok((config, step_warnings)) => {
                for warning in config.warnings.iter().chain(&step_warnings) {
                    eprintln!("warning: {warning}");
                }
                if cli.print_config {
                    return print_config(Some(path));
                }
                println!(
                    "{}: ok (listen {}{}, upstream {}, mount path \"{}\")",
                    path.display(),
                    config.server.listen,
                    if config.server.tls.is_some() {
                        " with TLS"
                    } else {
                        ""
                    },
                    config.upstream.base_url,
                    if config.server.mount_path.is_empty() {
                        "/"
                    } else {
                        &config.server.mount_path
                    },
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let result = match cli.command {
        None => {
            let source = ConfigSource::find(cli.config);
            source.load().map_err(Into::into).and_then(|config| {
                runtime(config.server.worker_threads)?.block_on(server::run(
                    &config,
                    Some(&source),
                    server::shutdown_signal(),
                ))
            })
        }
        Some(Command::Demo { listen }) => {
            runtime(None).and_then(|rt| rt.block_on(demo::run(listen, server::shutdown_signal())))
        }
        Some(Command::MockUpstream {
            listen,
            api_key,
            accounts,
        }) => runtime(None).and_then(|rt| {
            rt.block_on(demo::run_mock_upstream(
                listen,
                api_key,
                accounts,
                server::shutdown_signal(),
            ))
        }),
        Some(Command::SignJwt { sub, ttl, demo }) => sign_jwt(cli.config, &sub, &ttl, demo),
        Some(Command::GenCert { hosts, out, force }) => gen_cert(&hosts, &out, force),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refold-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--print-config`: the effective config of `path` (`None`: the defaults) as TOML.
fn print_config(path: Option<&std::path::Path>) -> ExitCode {
    match Config::effective_toml(path) {
        Ok(toml) => {
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("refold-proxy: {e}");
            ExitCode::from(2)
        }
    }
}

fn sign_jwt(
    config: Option<PathBuf>,
    sub: &str,
    ttl: &str,
    demo: bool,
) -> Result<(), refold_proxy::BoxError> {
    let ttl = parse_duration(ttl)?;
    if demo {
        let token = demo::sign_jwt(sub, ttl)?;
        eprintln!("signed with the demo's secret (for `refold-proxy demo` only)");
        println!("{token}");
        return Ok(());
    }
    // Only [identity] and its secret: signing needs neither Refold's API key nor Redis.
    let config = ConfigSource::find(config);
    let identity = Config::load_identity(config.path())?;
    let (Some(secret), Some(source)) = (&identity.hs_secret, &identity.hs_secret_env) else {
        return Err(
            "sign-jwt needs an HS algorithm and identity.hs_secret_env or identity.hs_secret_file in the config".into(),
        );
    };
    let token = identity::sign_hs256(
        secret,
        &identity.account_claim,
        sub,
        ttl,
        identity.issuer.as_deref(),
        identity.audience.as_deref(),
    )?;
    eprintln!("signed with the secret in {source} (identity in {config})");
    println!("{token}");
    Ok(())
}

fn gen_cert(
    hosts: &[String],
    out: &std::path::Path,
    force: bool,
) -> Result<(), refold_proxy::BoxError> {
    let pair = tls::write_self_signed(hosts, out, force)?;
    let toml_path =
        |path: &std::path::Path| toml::Value::String(path.display().to_string()).to_string();
    println!(
        "wrote {} (self-signed for {}, valid 365 days)\n\
         wrote {} (its private key, readable by you only)\n\
         \nFor development and trials only: clients must be told to trust cert.pem\
         \n(e.g. curl --cacert {}). Add to the config:\n\
         \n[server.tls]\ncert_file = {}\nkey_file = {}",
        pair.cert_file.display(),
        hosts.join(", "),
        pair.key_file.display(),
        pair.cert_file.display(),
        toml_path(&pair.cert_file),
        toml_path(&pair.key_file),
    );
    Ok(())
}

/// The runtime the server runs on. One worker means one thread doing all the work, as an
/// nginx worker does: tokio's current-thread scheduler, with no work-stealing queues,
/// no cross-thread wake-ups and no idle worker to park and unpark. More workers (or one
/// per core, the default) use the multi-threaded scheduler.
fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, refold_proxy::BoxError> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    Ok(builder.build()?)
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file or a pipe.
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Auto if terminal => builder.init(),
        LogFormat::Auto | LogFormat::Json => builder.json().init(),
    }
}
