//! The `refold-proxy` command: parse arguments, set up logging, run. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use refold_proxy::config::{Config, ConfigSource};
use refold_proxy::process::{reload, server, tls};
use refold_proxy::telemetry::traces;

mod demo;
mod healthcheck;
mod selftest;
mod sign;
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
        /// Serve HTTPS with a fresh self-signed pair (as `gen-cert` makes), removed on exit.
        #[arg(long)]
        tls: bool,
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
    /// Sign an app JWT for trying a deployment by hand: with the configured HS secret, a
    /// private key (`--key`), or the demo's secret. Reads only the config's `[identity]`
    /// table (claims, and the secret unless `--key`).
    SignJwt {
        /// The linked account id the token names.
        #[arg(long)]
        sub: String,
        /// How long the token is valid (90s, 30m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Sign with this PEM private key (RSA, ECDSA P-256/P-384 or Ed25519) instead of
        /// the HS secret. The key's type chooses the algorithm unless `--alg` does.
        #[arg(long, value_name = "PEM", conflicts_with = "demo")]
        key: Option<PathBuf>,
        /// The algorithm for `--key` (RS256, RS384, RS512, PS256, PS384, PS512, ES256,
        /// ES384, EdDSA).
        #[arg(long, value_name = "ALG", requires = "key")]
        alg: Option<String>,
        /// The `kid` header naming the key, as the JWKS publishes it.
        #[arg(long, value_name = "KID", requires = "key")]
        kid: Option<String>,
        /// Sign with the demo's secret and claims instead of the config's, for `demo`.
        #[arg(long)]
        demo: bool,
    },
    /// GET the admin listener's /healthz (or --url) and exit 0 on a 2xx, 1 otherwise: the
    /// container image's HEALTHCHECK, which has no shell or curl.
    Healthcheck {
        /// The URL to GET (plain http).
        #[arg(long, default_value = healthcheck::DEFAULT_URL)]
        url: String,
        /// How long to wait for the answer (whole seconds: 2s, 1m).
        #[arg(long, default_value = "2s")]
        timeout: String,
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
    /// Probe a live deployment from outside, as an attacker would, and report each check.
    ///
    /// Exit status: 0 all passed, 1 a check failed, 2 could not run (e.g. unreachable).
    /// Sends only GETs, CORS preflights and requests the proxy must refuse: nothing that
    /// changes state at Refold, unless --allow-writes.
    Selftest(selftest::SelftestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = match init_tracing(cli.log_format) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("refold-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
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
        Some(Command::Demo { listen, tls }) => runtime(None)
            .and_then(|rt| rt.block_on(demo::run(listen, tls, server::shutdown_signal()))),
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
        Some(Command::SignJwt {
            sub,
            ttl,
            key,
            alg,
            kid,
            demo,
        }) => {
            let signer = match (demo, key) {
                (true, _) => sign::Signer::Demo,
                (false, Some(path)) => sign::Signer::Key { path, alg, kid },
                (false, None) => sign::Signer::Secret,
            };
            sign::sign_jwt(ConfigSource::find(cli.config), &sub, &ttl, signer)
        }
        Some(Command::GenCert { hosts, out, force }) => gen_cert(&hosts, &out, force),
        Some(Command::Selftest(args)) => return selftest::run(args),
        Some(Command::Healthcheck { url, timeout }) => healthcheck::run(&url, &timeout),
    };
    // The server has drained: the last requests' spans go out before the process ends.
    if let Some(traces) = traces {
        traces.shutdown();
    }
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

/// Logging, and the trace exporter's layer when an OTLP endpoint is set (see
/// `refold_proxy::telemetry::traces`); the exporter is returned to be shut down last.
fn init_tracing(format: LogFormat) -> Result<Option<traces::Traces>, String> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{filter::FilterExt, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file or a pipe.
    let terminal = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Auto if terminal => fmt.boxed(),
        LogFormat::Auto | LogFormat::Json => fmt.json().boxed(),
    };
    // The trace spans are never log lines, whatever RUST_LOG says.
    let fmt = fmt.with_filter(filter.and(traces::not_spans()));
    let exporter = traces::from_env().map_err(|e| format!("traces: {e}"))?;
    let (otel, traces) = exporter.unzip();
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Ok(traces)
}
