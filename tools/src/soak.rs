//! Soak run of the real `refold-proxy` binary against the in-process stand-in Refold API.
//!
//! Not a criterion bench and not part of CI. Run it by hand (see `benches/README.md`):
//!
//! ```text
//! cargo build --release
//! cargo run --release -p refold-tools --bin soak -- [--minutes 10] [--accounts 500] [--fill 100000]
//! ```
//!
//! 1. The stand-in runs in this process (so the run can flip its faults); the proxy runs
//!    as a child process, so the RSS read from `/proc/<pid>/status` is the proxy's alone.
//! 2. Fill: one request each for `--fill` distinct linked accounts, bounded concurrency;
//!    RSS before and after gives the memory per cached account.
//! 3. Soak: paced mixed SDK traffic for `--minutes` across `--accounts` accounts, with a
//!    fault schedule on the stand-in (token endpoint down, API 500s, API latency, every
//!    token revoked, token endpoint 429); RSS sampled every minute.
//! 4. A plain-text summary. The child is killed on every way out (Ctrl-C, SIGTERM, panic).
//!
//! Traffic goes to 127.0.0.1 only. Both loops are bounded in time and in request count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use refold_mock::{ApiFault, MintFault, MockConfig, MockUpstream};
use refold_proxy::secret::Secret;
use refold_proxy::steps::identity::sign_hs256;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The API key the stand-in accepts and the proxy sends (a test-environment key).
const API_KEY: &str = "tk_soak_api_key";
/// The app-JWT signing secret the proxy trusts.
const APP_SECRET: &str = "soak-app-jwt-signing-secret-0123456789abcdef";
/// Length of one slot of the fault schedule.
const SLOT: Duration = Duration::from_secs(30);
/// Accounts never seen before that each token-endpoint fault brings (see `ColdPool`).
const COLD_PER_POOL: u64 = 20;
/// One soak request in this many goes to the current cold pool.
const COLD_ONE_IN: u64 = 50;
/// After a token-endpoint fault clears, cold accounts may still get 503 this long: the
/// breaker's cool-down (10 s by default) or a 429's Retry-After (5 s here), plus slack.
const BREAKER_GRACE: Duration = Duration::from_secs(15);
/// Requests per warm-up connection before the fill's baseline RSS is read.
const WARMUP_PER_WORKER: usize = 20;
/// Pause before a "settled" RSS reading.
const SETTLE: Duration = Duration::from_secs(2);
/// Growth of RSS, once every fault has run once, above which memory is called growing...
const GROWTH_LIMIT_FRACTION: f64 = 0.02;
/// ... but never below this (KiB): allocator noise on a small heap.
const GROWTH_LIMIT_MIN_KIB: f64 = 1024.0;
/// A rise between two 5 s samples at least this large (KiB) is listed with its phase.
const RSS_STEP_KIB: u64 = 256;

/// Soak the proxy binary: fill the token cache, then mixed load under faults.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// Length of the soak phase.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Linked accounts the soak traffic is spread over.
    #[arg(long, default_value_t = 500)]
    accounts: usize,
    /// Distinct linked accounts requested once each in the fill phase (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    fill: usize,
    /// Requests in flight during the fill (one HTTP/1.1 keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    fill_concurrency: usize,
    /// Requests in flight during the soak (fixed: the load generator never exceeds it).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per second offered during the soak; ticks finding every worker busy are
    /// skipped, not queued.
    #[arg(long, default_value_t = 1000)]
    rps: u64,
    /// Hard cap on soak requests (default: rps × seconds).
    #[arg(long)]
    max_requests: Option<u64>,
    /// Lifetime of the stand-in's session tokens; the proxy refreshes a quarter of it
    /// ahead, so a 10-minute soak sees every account refreshed several times.
    #[arg(long, default_value_t = 240)]
    token_ttl_s: u64,
    /// The proxy binary (default: the release build of this package).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
}

/// The workspace's release build of the proxy (`cargo build --release`), in
/// `CARGO_TARGET_DIR` when that is set.
fn release_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("release/refold-proxy")
}

/// The proxy child's pid while it runs, for the panic hook.
static CHILD_PID: AtomicU32 = AtomicU32::new(0);

fn main() -> ExitCode {
    let args = Args::parse();
    let bin = args.proxy_bin.clone().unwrap_or_else(release_binary);
    if !bin.is_file() {
        eprintln!(
            "soak: the proxy binary {} is missing.\n\
             Build it first with `cargo build --release` (or pass --proxy-bin PATH).",
            bin.display()
        );
        return ExitCode::from(2);
    }
    if !bin.components().any(|c| c.as_os_str() == "release") {
        eprintln!(
            "soak: warning: {} is not a release build; figures will not be representative",
            bin.display()
        );
    }
    install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soak: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            result = run(args, bin) => match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("soak: {e}");
                    ExitCode::FAILURE
                }
            },
            signal = stop_signal() => {
                // Dropping `run` dropped the child handle, which kills it; make sure anyway.
                kill_child_now();
                eprintln!("soak: {signal}: proxy stopped, exiting");
                ExitCode::from(130)
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Ctrl-C or SIGTERM, whichever comes first.
async fn stop_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

/// Kills the child on any panic, whichever thread panics.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_child_now();
        default(info);
    }));
}

fn kill_child_now() {
    let pid = CHILD_PID.swap(0, Ordering::SeqCst);
    if pid != 0 {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn fill_account(i: usize) -> String {
    format!("fill-{i:06}")
}

fn soak_account(i: usize) -> String {
    format!("soak-{i:04}")
}

fn warm_account(i: usize) -> String {
    format!("warm-{i:03}")
}

fn cold_account(pool: u64, i: u64) -> String {
    format!("cold-{pool:03}-{i:02}")
}

/// Everything the run measured, for the summary.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    checks: Vec<(bool, String)>,
}

impl Report {
    fn line(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("{text}");
        self.lines.push(text);
    }

    fn check(&mut self, ok: bool, text: impl Into<String>) {
        self.checks.push((ok, text.into()));
    }
}

async fn run(args: Args, bin: PathBuf) -> Result<bool, BoxError> {
    let mut report = Report::default();
    let started = SystemTime::now();
    let refresh_before_s = (args.token_ttl_s / 4).max(1);
    let warm_count = args.fill_concurrency.max(1);

    // The stand-in, in process, knowing every account the run names.
    let setup = Instant::now();
    let accounts: Vec<String> = (0..warm_count)
        .map(warm_account)
        .chain((0..args.fill).map(fill_account))
        .chain((0..args.accounts).map(soak_account))
        .collect();
    let known = accounts.len();
    let (mock_addr, mock) = MockUpstream::spawn(
        MockConfig {
            api_key: API_KEY.into(),
            token_ttl: Duration::from_secs(args.token_ttl_s),
            accounts,
            record_limit: 16,
            ..MockConfig::default()
        }
        // The proxy is measured, not Refold's rate limit.
        .without_rate_limits(),
    )
    .await?;
    let mock_setup = setup.elapsed();

    // The proxy, as a child process.
    let dir = TempDir::create()?;
    let config_path = dir.path.join("proxy.toml");
    let max_accounts = known + 1024;
    let max_connections = 2 * args.fill_concurrency.max(args.concurrency) + 64;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_s = 10\n\
         [upstream]\nbase_url = \"http://{mock_addr}\"\napi_key_env = \"SOAK_REFOLD_API_KEY\"\n\
         timeout_ms = 10000\n\
         [identity]\nhs_secret_env = \"SOAK_APP_JWT_SECRET\"\n\
         [tokens]\nmax_accounts = {max_accounts}\nrefresh_before_expiry_s = {refresh_before_s}\n\
         max_mints_per_s = 100000\n\
         [limits]\nmax_connections = {max_connections}\n\
         per_account_rps = 1000000.0\nper_account_burst = 1000000\nmax_in_flight = 100000\n\
         per_account_in_flight = 100000\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    std::fs::write(&config_path, &config)?;
    let mut child = tokio::process::Command::new(&bin)
        .arg("--config")
        .arg(&config_path)
        .args(["--log-format", "json"])
        .env("SOAK_REFOLD_API_KEY", API_KEY)
        .env("SOAK_APP_JWT_SECRET", APP_SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id().ok_or("the proxy exited at once")?;
    CHILD_PID.store(pid, Ordering::SeqCst);
    let logs = Arc::new(LogStats::default());
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let proxy_addr = tokio::select! {
        addr = read_listen_address(stderr, Arc::clone(&logs)) => addr?,
        status = child.wait() => {
            let status = status?;
            return Err(format!("the proxy exited before listening ({status}): {}", logs.tail()).into());
        }
    };
    let base = format!("http://{proxy_addr}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(args.fill_concurrency + args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;

    report.line("==== refold-proxy soak ====");
    report.line(format!("date            {} UTC", utc_timestamp(started)));
    report.line(format!("machine         {}", machine()));
    report.line(format!(
        "proxy binary    {} ({:.1} MB), pid {pid}",
        shown_path(&bin),
        std::fs::metadata(&bin)?.len() as f64 / 1e6
    ));
    report.line(format!(
        "settings        --minutes {} --accounts {} --fill {} --concurrency {} --rps {} \
         --fill-concurrency {} --token-ttl-s {}",
        args.minutes,
        args.accounts,
        args.fill,
        args.concurrency,
        args.rps,
        args.fill_concurrency,
        args.token_ttl_s
    ));
    report.line(format!(
        "proxy config    tokens.max_accounts {max_accounts}, tokens.refresh_before_expiry_s \
         {refresh_before_s}, limits.max_connections {max_connections}, upstream.timeout_ms \
         10000, tokens.max_mints_per_s 100000 (the stand-in has no rate limit), other keys \
         default (max_concurrent_mints 4, breaker 5 failures / 10 s)"
    ));
    report.line(format!(
        "stand-in        {known} linked accounts created in {:.2} s (in process; not in the RSS figures)",
        mock_setup.as_secs_f64()
    ));

    let phases = async move {
        let ctx = Ctx {
            client,
            base,
            pid,
            mock: mock.clone(),
        };
        fill_phase(&ctx, &args, &mut report).await?;
        soak_phase(&ctx, &args, &mut report).await?;
        Ok::<Report, BoxError>(report)
    };
    let mut report = tokio::select! {
        report = phases => report?,
        status = child.wait() => {
            CHILD_PID.store(0, Ordering::SeqCst);
            return Err(format!(
                "THE PROXY EXITED DURING THE RUN ({}). Last log lines:\n{}",
                status?,
                logs.tail()
            )
            .into());
        }
    };

    // Graceful stop: SIGTERM, the proxy drains and exits 0.
    let stop = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
        Ok(status) => {
            CHILD_PID.store(0, Ordering::SeqCst);
            let status = status?;
            report.check(
                status.success(),
                format!(
                    "proxy stopped ({status}) {:.2} s after SIGTERM",
                    stop.elapsed().as_secs_f64()
                ),
            );
            format!("{status} after {:.2} s", stop.elapsed().as_secs_f64())
        }
        Err(_) => {
            kill_child_now();
            report.check(false, "proxy did not exit within 15 s of SIGTERM (killed)");
            "did not exit within 15 s (killed)".into()
        }
    };
    report.line(format!("proxy SIGTERM   {exit}"));
    let log_summary = logs.summary();
    report.line(format!("proxy log       {log_summary}"));

    let all_ok = report.checks.iter().all(|(ok, _)| *ok);
    report.line("-- checks --");
    for (ok, text) in std::mem::take(&mut report.checks) {
        report.line(format!("{} {text}", if ok { "ok  " } else { "FAIL" }));
    }
    println!();
    println!("==== summary (plain text, to paste) ====");
    for line in &report.lines {
        println!("{line}");
    }
    drop(dir);
    Ok(all_ok)
}

/// What both phases need.
struct Ctx {
    client: reqwest::Client,
    base: String,
    pid: u32,
    mock: MockUpstream,
}

impl Ctx {
    fn proc(&self) -> ProcStats {
        ProcStats::read(self.pid)
    }
}

/// One proxy request's outcome: `Ok(())` for 2xx, else the key it is counted under.
async fn send(request: reqwest::RequestBuilder) -> Result<(), String> {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let retry_after = response.headers().contains_key("retry-after");
            match response.bytes().await {
                Ok(_) if status.is_success() => Ok(()),
                Ok(body) => {
                    let code = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "-".into());
                    let missing = if status.as_u16() == 503 && !retry_after {
                        " (no Retry-After)"
                    } else {
                        ""
                    };
                    Err(format!("{} {code}{missing}", status.as_u16()))
                }
                Err(e) => Err(format!("socket: {} reading the body", socket_kind(&e))),
            }
        }
        Err(e) => Err(format!("socket: {}", socket_kind(&e))),
    }
}

fn socket_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

fn app_jwt(secret: &Secret, account: &str, ttl: Duration) -> Result<String, BoxError> {
    Ok(sign_hs256(secret, "sub", account, ttl, None, None)?)
}

// ---------------------------------------------------------------------------------------
// Fill phase

async fn fill_phase(ctx: &Ctx, args: &Args, report: &mut Report) -> Result<(), BoxError> {
    report.line("-- fill (bounded memory) --");
    let secret = Secret::new(APP_SECRET);
    let url = format!("{}/api/v2/public/workflow", ctx.base);
    let start_proc = ctx.proc();
    report.line(format!(
        "proxy at start          RSS {}, threads {}, fds {}",
        mib(start_proc.rss_kib),
        start_proc.threads,
        start_proc.fds
    ));

    // Warm-up: open the connections and pools the fill will use, so the baseline has them.
    let warm_count = args.fill_concurrency.max(1);
    let mints_before_warmup = ctx.mock.mint_count();
    let mut warm = Vec::new();
    for i in 0..warm_count {
        let client = ctx.client.clone();
        let url = url.clone();
        let jwt = app_jwt(&secret, &warm_account(i), Duration::from_secs(3600))?;
        warm.push(tokio::spawn(async move {
            let mut failed = 0u64;
            for _ in 0..WARMUP_PER_WORKER {
                if send(client.get(&url).bearer_auth(&jwt)).await.is_err() {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut warm_failed = 0;
    for task in warm {
        warm_failed += task.await?;
    }
    report.check(
        warm_failed == 0,
        format!(
            "warm-up: {} requests over {warm_count} accounts, {warm_failed} failed",
            warm_count * WARMUP_PER_WORKER
        ),
    );
    tokio::time::sleep(SETTLE).await;

    let before = ctx.proc();
    let mints_before = ctx.mock.mint_count();
    report.line(format!(
        "warm-up                 {} requests, {} accounts, {} mints; RSS {}",
        warm_count * WARMUP_PER_WORKER,
        warm_count,
        mints_before - mints_before_warmup,
        mib(before.rss_kib)
    ));
    if args.fill == 0 {
        report.line("fill                    skipped (--fill 0)");
        return Ok(());
    }

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let began = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.fill_concurrency.max(1) {
        let (client, url, next, done, errors) = (
            ctx.client.clone(),
            url.clone(),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&errors),
        );
        let secret = secret.clone();
        let fill = args.fill;
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= fill {
                    break;
                }
                let outcome = match app_jwt(&secret, &fill_account(i), Duration::from_secs(3600)) {
                    Ok(jwt) => send(client.get(&url).bearer_auth(jwt)).await,
                    Err(e) => Err(format!("bench: cannot sign ({e})")),
                };
                if let Err(key) = outcome {
                    *lock(&errors).entry(key).or_insert(0) += 1;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // RSS at every tenth of the fill.
    let mut checkpoints = vec![(0usize, before.rss_kib)];
    let mut next_checkpoint = 1;
    while next_checkpoint <= 10 {
        let finished = done.load(Ordering::Relaxed);
        while next_checkpoint <= 10 && finished >= args.fill * next_checkpoint / 10 {
            checkpoints.push((finished, ctx.proc().rss_kib));
            next_checkpoint += 1;
        }
        if workers.iter().all(|w| w.is_finished()) && next_checkpoint <= 10 {
            checkpoints.push((done.load(Ordering::Relaxed), ctx.proc().rss_kib));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for worker in workers {
        worker.await?;
    }
    let took = began.elapsed();
    let fill_mints = ctx.mock.mint_count() - mints_before;
    tokio::time::sleep(SETTLE).await;
    let after = ctx.proc();
    let errors = lock(&errors).clone();
    let failed: u64 = errors.values().sum();

    let token_len = ctx
        .mock
        .current_token(&fill_account(0))
        .map_or(0, |t| t.len());
    let per_account = (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / args.fill as f64;
    let mut deciles: Vec<f64> = checkpoints
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].1 as f64 - w[0].1 as f64) * 1024.0 / (w[1].0 - w[0].0) as f64)
        .collect();
    let decile_text = deciles
        .iter()
        .map(|b| format!("{b:.0}"))
        .collect::<Vec<_>>()
        .join(" ");
    let median_decile = median(&mut deciles);

    report.line(format!(
        "fill                    {} distinct accounts, one GET each, {} in flight over HTTP/1.1 \
         keep-alive: {:.1} s ({:.0} req/s)",
        args.fill,
        args.fill_concurrency,
        took.as_secs_f64(),
        args.fill as f64 / took.as_secs_f64()
    ));
    report.line(format!(
        "fill outcome            {} ok, {failed} failed{}",
        args.fill as u64 - failed,
        format_counts(&errors)
    ));
    report.line(format!(
        "fill mints              {fill_mints} (stand-in counter; expected {})",
        args.fill
    ));
    report.line(format!(
        "session token           stand-in HS256 JWT, {token_len} bytes (Authorization value {} bytes)",
        token_len + "Bearer ".len()
    ));
    report.line(format!(
        "proxy RSS               before fill {}, after fill {} (+{}), VmHWM {}",
        mib(before.rss_kib),
        mib(after.rss_kib),
        mib(after.rss_kib.saturating_sub(before.rss_kib)),
        mib(after.hwm_kib)
    ));
    report.line(format!(
        "RSS per cached account  {per_account:.0} bytes (whole fill); median of the ten tenths \
         {median_decile:.0} bytes"
    ));
    report.line(format!("  per tenth (bytes)     {decile_text}"));
    report.line(format!(
        "proxy after fill        threads {}, fds {}, CPU {:.1} s",
        after.threads, after.fds, after.cpu_s
    ));
    report.check(
        failed == 0,
        format!("fill: {failed} of {} requests failed", args.fill),
    );
    report.check(
        fill_mints == args.fill as u64,
        format!("fill: {fill_mints} mints for {} accounts", args.fill),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Soak phase

/// One stretch of the schedule with one fault state.
struct Phase {
    label: &'static str,
    started: Duration,
    mints_at_start: u64,
    mints: u64,
    requests: u64,
    ok: u64,
    cold_requests: u64,
    cold_ok: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
}

/// Accounts never seen before, added to the stand-in when a token-endpoint fault starts
/// and requested (one request in `COLD_ONE_IN`) from then until the next such fault: they
/// cannot get a token during the fault (503 with Retry-After expected) and must recover
/// by themselves once it clears. Warm accounts must see no error at all meanwhile.
struct ColdPool {
    fault: &'static str,
    started: Duration,
    cleared: Duration,
    /// When a cold request first succeeded after the fault cleared.
    first_ok_after: Option<Duration>,
}

/// A failed request: its key, and when it was sent and answered (since the soak began).
struct ErrorEvent {
    key: String,
    phase: &'static str,
    /// The cold pool (index) the account belonged to, if any.
    cold: Option<usize>,
    sent: Duration,
    done: Duration,
}

struct SoakShared {
    phases: Mutex<Vec<Phase>>,
    errors: Mutex<Vec<ErrorEvent>>,
    pools: Mutex<Vec<ColdPool>>,
    /// Number of pools started; the current one is this minus one.
    pool_count: AtomicUsize,
    current: AtomicUsize,
    start: Instant,
}

impl SoakShared {
    /// Starts counting under `label` (no-op when that is already the current label).
    fn enter(&self, label: &'static str, mock: &MockUpstream) {
        let mut phases = lock(&self.phases);
        if phases.last().is_some_and(|p| p.label == label) {
            return;
        }
        let mints = mock.mint_count();
        if let Some(last) = phases.last_mut() {
            last.mints = mints - last.mints_at_start;
        }
        phases.push(Phase {
            label,
            started: self.start.elapsed(),
            mints_at_start: mints,
            mints: 0,
            requests: 0,
            ok: 0,
            cold_requests: 0,
            cold_ok: 0,
            errors: BTreeMap::new(),
            latencies_us: Vec::new(),
        });
        self.current.store(phases.len() - 1, Ordering::SeqCst);
    }

    /// Adds a pool of accounts new to the proxy and starts sending to it.
    fn start_pool(&self, fault: &'static str, mock: &MockUpstream) {
        let mut pools = lock(&self.pools);
        let pool = pools.len() as u64;
        for i in 0..COLD_PER_POOL {
            mock.add_account(&cold_account(pool, i));
        }
        let now = self.start.elapsed();
        pools.push(ColdPool {
            fault,
            started: now,
            cleared: Duration::MAX,
            first_ok_after: None,
        });
        self.pool_count.store(pools.len(), Ordering::SeqCst);
    }

    /// Notes that the current pool's fault has cleared.
    fn clear_pool(&self) {
        if let Some(pool) = lock(&self.pools).last_mut() {
            pool.cleared = self.start.elapsed();
        }
    }

    fn record(
        &self,
        phase: usize,
        cold: Option<usize>,
        outcome: Result<(), String>,
        sent: Instant,
    ) {
        let done = Instant::now();
        if let (Some(pool), Ok(())) = (cold, &outcome) {
            let mut pools = lock(&self.pools);
            let pool = &mut pools[pool];
            let since_start = done - self.start;
            if pool.first_ok_after.is_none() && sent - self.start >= pool.cleared {
                pool.first_ok_after = Some(since_start);
            }
        }
        let mut phases = lock(&self.phases);
        let phase = &mut phases[phase];
        phase.requests += 1;
        phase
            .latencies_us
            .push((done - sent).as_micros().min(u128::from(u32::MAX)) as u32);
        if cold.is_some() {
            phase.cold_requests += 1;
            phase.cold_ok += u64::from(outcome.is_ok());
        }
        match outcome {
            Ok(()) => phase.ok += 1,
            Err(key) => {
                *phase.errors.entry(key.clone()).or_insert(0) += 1;
                let label = phase.label;
                drop(phases);
                lock(&self.errors).push(ErrorEvent {
                    key,
                    phase: label,
                    cold,
                    sent: sent - self.start,
                    done: done - self.start,
                });
            }
        }
    }
}

/// The fault schedule, one entry per 30-second slot, cycled.
const SCHEDULE: [&str; 6] = [
    "calm",
    "mint-down",
    "revoke",
    "api-500",
    "api-slow",
    "mint-429",
];

/// What each schedule slot does to the stand-in. Labels name the phase requests are
/// counted under; "calm" is everything with no fault on.
async fn drive_faults(shared: Arc<SoakShared>, mock: MockUpstream) {
    let faults = mock.faults();
    for slot in 0u32.. {
        let at = shared.start + SLOT * slot;
        tokio::time::sleep_until(at).await;
        match SCHEDULE[slot as usize % SCHEDULE.len()] {
            "mint-down" => {
                // Token endpoint unreachable for 20 s: the connection is dropped unanswered.
                // A pool of cold accounts starts with it.
                shared.enter("mint-down", &mock);
                faults.set_mint_fault(MintFault::Down);
                shared.start_pool("mint-down", &mock);
                tokio::time::sleep_until(at + Duration::from_secs(20)).await;
                faults.clear_mint_fault();
                shared.clear_pool();
                shared.enter("calm", &mock);
            }
            "revoke" => {
                // Every session token revoked in Refold mid-traffic, 5 s into the slot.
                shared.enter("calm", &mock);
                tokio::time::sleep_until(at + Duration::from_secs(5)).await;
                mock.revoke_all_tokens();
                shared.enter("revoke", &mock);
                tokio::time::sleep_until(at + Duration::from_secs(20)).await;
                shared.enter("calm", &mock);
            }
            "api-500" => {
                // Every API call answers 500 for 10 s (passed through to callers).
                faults.set_api_fault(ApiFault::InternalError);
                shared.enter("api-500", &mock);
                tokio::time::sleep_until(at + Duration::from_secs(10)).await;
                faults.clear_api_fault();
                shared.enter("calm", &mock);
            }
            "api-slow" => {
                // Every API answer 250 ms late for 10 s.
                faults.set_api_latency(Duration::from_millis(250));
                shared.enter("api-slow", &mock);
                tokio::time::sleep_until(at + Duration::from_secs(10)).await;
                faults.set_api_latency(Duration::ZERO);
                shared.enter("calm", &mock);
            }
            "mint-429" => {
                // Token endpoint rate limited (Retry-After 5) for 15 s, with a cold pool.
                shared.enter("mint-429", &mock);
                faults.set_mint_fault(MintFault::RateLimited {
                    retry_after: Duration::from_secs(5),
                });
                shared.start_pool("mint-429", &mock);
                tokio::time::sleep_until(at + Duration::from_secs(15)).await;
                faults.clear_mint_fault();
                shared.clear_pool();
                shared.enter("calm", &mock);
            }
            _ => shared.enter("calm", &mock),
        }
    }
}

/// A tiny xorshift generator: the load mix needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn soak_phase(ctx: &Ctx, args: &Args, report: &mut Report) -> Result<(), BoxError> {
    report.line("-- soak --");
    let secret = Secret::new(APP_SECRET);
    let duration = Duration::from_secs(args.minutes * 60);
    let max_requests = args
        .max_requests
        .unwrap_or(args.rps * duration.as_secs())
        .max(1);
    let jwt_ttl = duration + Duration::from_secs(15 * 60);
    let jwts: Arc<Vec<String>> = Arc::new(
        (0..args.accounts.max(1))
            .map(|i| app_jwt(&secret, &soak_account(i), jwt_ttl))
            .collect::<Result<_, _>>()?,
    );

    let start = Instant::now();
    let end = start + duration;
    let shared = Arc::new(SoakShared {
        phases: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        pools: Mutex::new(Vec::new()),
        pool_count: AtomicUsize::new(0),
        current: AtomicUsize::new(0),
        start,
    });
    let mints_at_start = ctx.mock.mint_count();
    shared.enter("calm", &ctx.mock);
    let mut samples = vec![(Duration::ZERO, ctx.proc())];
    let driver = tokio::spawn(drive_faults(Arc::clone(&shared), ctx.mock.clone()));

    // Pacer: `rps` tickets a second, never more than `concurrency` waiting.
    let tickets = Arc::new(Semaphore::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = {
        let (tickets, issued, skipped, stop) = (
            Arc::clone(&tickets),
            Arc::clone(&issued),
            Arc::clone(&skipped),
            Arc::clone(&stop),
        );
        let (rps, cap) = (args.rps, args.concurrency.max(1));
        tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut due = 0f64;
            loop {
                interval.tick().await;
                if stop.load(Ordering::SeqCst) || Instant::now() >= end {
                    break;
                }
                due += rps as f64 * tick.as_secs_f64();
                let whole = due.floor() as u64;
                due -= whole as f64;
                for _ in 0..whole {
                    if issued.load(Ordering::Relaxed) >= max_requests {
                        return;
                    }
                    if tickets.available_permits() >= cap {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tickets.add_permits(1);
                        issued.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let mut workers = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let secret = secret.clone();
        let (client, base, jwts, shared, tickets, stop) = (
            ctx.client.clone(),
            ctx.base.clone(),
            Arc::clone(&jwts),
            Arc::clone(&shared),
            Arc::clone(&tickets),
            Arc::clone(&stop),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x2545_F491_4F6C_DD1D));
            loop {
                tokio::select! {
                    permit = tickets.acquire() => match permit {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    },
                    () = tokio::time::sleep_until(end) => break,
                }
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let roll = rng.next();
                let pools = shared.pool_count.load(Ordering::SeqCst);
                let cold = (pools > 0 && (roll >> 40).is_multiple_of(COLD_ONE_IN)).then(|| pools - 1);
                let cold_jwt;
                let jwt = match cold {
                    Some(pool) => {
                        let account = cold_account(pool as u64, (roll >> 20) % COLD_PER_POOL);
                        cold_jwt = app_jwt(&secret, &account, Duration::from_secs(600))
                            .unwrap_or_default();
                        &cold_jwt
                    }
                    None => &jwts[(roll >> 8) as usize % jwts.len()],
                };
                let request = match roll % 20 {
                    // Half the traffic: the SDK listing workflows.
                    0..=9 => client.get(format!("{base}/api/v2/public/workflow")),
                    10..=11 => client.get(format!("{base}/api/v2/public/workflow?slug=freshdesk")),
                    12..=14 => client.get(format!("{base}/api/v2/f-sdk/application")),
                    // A quarter: small executions of the catalogue's freshdesk workflow.
                    n => client
                        .post(format!(
                            "{base}/api/v2/public/workflow/create-ticket/execute"
                        ))
                        .header("slug", "freshdesk")
                        .header("sync_execution", if n == 19 { "true" } else { "false" })
                        .header("content-type", "application/json")
                        .body(format!(
                            "{{\"subject\":\"soak {roll:x}\",\"description\":\"from the soak\",\"priority\":1}}"
                        )),
                };
                let phase = shared.current.load(Ordering::SeqCst);
                let sent = Instant::now();
                let outcome = send(request.bearer_auth(jwt)).await;
                shared.record(phase, cold, outcome, sent);
            }
        }));
    }

    // RSS every 5 s; the report prints the minutes.
    let mut next_sample = start + Duration::from_secs(5);
    while Instant::now() < end {
        tokio::time::sleep_until(next_sample.min(end)).await;
        if Instant::now() >= next_sample {
            samples.push((start.elapsed(), ctx.proc()));
            next_sample += Duration::from_secs(5);
        }
    }
    stop.store(true, Ordering::SeqCst);
    pacer.await?;
    tickets.close();
    let drain = Instant::now();
    for worker in workers {
        if tokio::time::timeout(Duration::from_secs(90), worker)
            .await
            .is_err()
        {
            report.check(false, "a load worker did not finish within 90 s of the end");
        }
    }
    let drained_in = drain.elapsed();
    driver.abort();
    let _ = driver.await;
    ctx.mock.faults().clear();
    let took = start.elapsed();
    {
        let mut phases = lock(&shared.phases);
        let mints = ctx.mock.mint_count();
        if let Some(last) = phases.last_mut() {
            last.mints = mints - last.mints_at_start;
        }
    }
    let soak_mints = ctx.mock.mint_count() - mints_at_start;
    samples.push((took, ctx.proc()));
    tokio::time::sleep(SETTLE).await;
    let settled = ctx.proc();

    let phases = std::mem::take(&mut *lock(&shared.phases));
    let error_events = std::mem::take(&mut *lock(&shared.errors));
    let pools = std::mem::take(&mut *lock(&shared.pools));
    soak_report(
        report,
        args,
        &samples,
        &settled,
        SoakTotals {
            phases,
            pools,
            error_events,
            took,
            drained_in,
            issued: issued.load(Ordering::Relaxed),
            skipped: skipped.load(Ordering::Relaxed),
            max_requests,
            mints: soak_mints,
        },
    );
    Ok(())
}

struct SoakTotals {
    phases: Vec<Phase>,
    pools: Vec<ColdPool>,
    error_events: Vec<ErrorEvent>,
    took: Duration,
    drained_in: Duration,
    issued: u64,
    skipped: u64,
    max_requests: u64,
    mints: u64,
}

fn soak_report(
    report: &mut Report,
    args: &Args,
    samples: &[(Duration, ProcStats)],
    settled: &ProcStats,
    totals: SoakTotals,
) {
    let (phases, pools, error_events) = (&totals.phases, &totals.pools, &totals.error_events);
    let requests: u64 = phases.iter().map(|p| p.requests).sum();
    let ok: u64 = phases.iter().map(|p| p.ok).sum();
    // The API-500 windows, from their start to the start of the phase after them.
    let windows: Vec<(Duration, Duration)> = phases
        .iter()
        .enumerate()
        .filter(|(_, p)| p.label == "api-500")
        .map(|(i, p)| {
            let end = phases.get(i + 1).map_or(Duration::MAX, |next| next.started);
            (p.started, end)
        })
        .collect();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut unexpected: BTreeMap<String, u64> = BTreeMap::new();
    for event in error_events {
        *errors.entry(event.key.clone()).or_insert(0) += 1;
        // Refold's own 500s while the API-500 fault is on are the only errors the
        // schedule should produce (the proxy passes them through). A request counts as
        // exposed to the fault if it was in flight at any moment of a window.
        let refold_500 = event.key == "500 INTERNAL_SERVER_ERROR"
            && windows
                .iter()
                .any(|(from, to)| event.sent < *to && event.done >= *from);
        // A cold account cannot get a token while the token endpoint fails, nor until the
        // breaker's cool-down after it: 503 with Retry-After, for cold accounts only.
        let cold_503 = event.key == "503 TOKEN_SERVICE_UNAVAILABLE"
            && event.cold.is_some_and(|pool| {
                let pool = &pools[pool];
                event.sent < pool.cleared.saturating_add(BREAKER_GRACE)
                    && event.done >= pool.started
            });
        let expected = refold_500 || cold_503;
        if !expected {
            *unexpected
                .entry(format!("{} [sent in {}]", event.key, event.phase))
                .or_insert(0) += 1;
        }
    }
    let socket: u64 = errors
        .iter()
        .filter(|(k, _)| k.starts_with("socket"))
        .map(|(_, n)| n)
        .sum();
    let mut all_latencies: Vec<u32> = phases
        .iter()
        .flat_map(|p| p.latencies_us.iter().copied())
        .collect();
    all_latencies.sort_unstable();

    report.line(format!(
        "load                    {} accounts, {} in flight (fixed), {} req/s offered, cap {} \
         requests, {:.1} min; mix 50% GET workflow, 10% GET workflow?slug, 15% GET f-sdk/application, \
         25% POST create-ticket/execute (slug: freshdesk, 1 in 5 sync); from the first \
         token-endpoint fault on, 1 in {COLD_ONE_IN} to {COLD_PER_POOL} accounts new at that fault",
        args.accounts,
        args.concurrency,
        args.rps,
        totals.max_requests,
        totals.took.as_secs_f64() / 60.0
    ));
    report.line(format!(
        "schedule                {} s slots cycling {}",
        SLOT.as_secs(),
        SCHEDULE.join(" → ")
    ));
    report.line(format!(
        "requests                {requests} completed of {} sent ({:.0}/s); {} ticks skipped with \
         every worker busy; workers drained in {:.2} s",
        totals.issued,
        requests as f64 / totals.took.as_secs_f64(),
        totals.skipped,
        totals.drained_in.as_secs_f64()
    ));
    report.line(format!(
        "outcome                 {ok} 2xx, {} non-2xx, {socket} socket errors",
        requests - ok - socket
    ));
    report.line(format!("errors by status        {}", format_map(&errors)));
    report.line(format!(
        "unexpected errors       {}",
        if unexpected.is_empty() {
            "none".into()
        } else {
            format_map(&unexpected)
        }
    ));
    report.line(format!(
        "latency (all)           p50 {} p90 {} p99 {} max {}",
        ms(percentile(&all_latencies, 0.50)),
        ms(percentile(&all_latencies, 0.90)),
        ms(percentile(&all_latencies, 0.99)),
        ms(all_latencies.last().copied().unwrap_or(0))
    ));
    report.line(format!(
        "mints                   {} during the soak ({} accounts; token TTL {} s)",
        totals.mints, args.accounts, args.token_ttl_s
    ));

    // Per phase kind: totals, and medians over its occurrences.
    report.line(
        "by phase                kind       n  requests      2xx  non-2xx  cold 2xx/req  mints(median/occurrence)  p50(median)  p99(median)",
    );
    let mut kinds: Vec<&'static str> = Vec::new();
    for phase in phases {
        if !kinds.contains(&phase.label) {
            kinds.push(phase.label);
        }
    }
    for kind in kinds {
        let of_kind: Vec<&Phase> = phases.iter().filter(|p| p.label == kind).collect();
        let reqs: u64 = of_kind.iter().map(|p| p.requests).sum();
        let oks: u64 = of_kind.iter().map(|p| p.ok).sum();
        let cold_reqs: u64 = of_kind.iter().map(|p| p.cold_requests).sum();
        let cold_oks: u64 = of_kind.iter().map(|p| p.cold_ok).sum();
        let mut mints: Vec<f64> = of_kind.iter().map(|p| p.mints as f64).collect();
        let mut p50s: Vec<f64> = Vec::new();
        let mut p99s: Vec<f64> = Vec::new();
        for phase in &of_kind {
            let mut lat = phase.latencies_us.clone();
            lat.sort_unstable();
            if !lat.is_empty() {
                p50s.push(f64::from(percentile(&lat, 0.50)));
                p99s.push(f64::from(percentile(&lat, 0.99)));
            }
        }
        report.line(format!(
            "                        {kind:<9} {:>2} {reqs:>9} {oks:>8} {:>8}  {:>12}  {:>24}  {:>11}  {:>11}",
            of_kind.len(),
            reqs - oks,
            format!("{cold_oks}/{cold_reqs}"),
            format!("{:.0}", median(&mut mints)),
            ms(median(&mut p50s) as u32),
            ms(median(&mut p99s) as u32),
        ));
    }
    let mut mint_line = String::new();
    for phase in phases.iter().filter(|p| p.label != "calm" || p.mints > 0) {
        let _ = write!(
            mint_line,
            " {}@{}s:{}",
            phase.label,
            phase.started.as_secs(),
            phase.mints
        );
    }
    report.line(format!("mints by phase          {}", mint_line.trim()));

    // Cold accounts: refused while the token endpoint failed, recovered by themselves.
    let cold_requests: u64 = phases.iter().map(|p| p.cold_requests).sum();
    let cold_ok: u64 = phases.iter().map(|p| p.cold_ok).sum();
    let mut cold_errors: BTreeMap<String, u64> = BTreeMap::new();
    for event in error_events.iter().filter(|e| e.cold.is_some()) {
        *cold_errors.entry(event.key.clone()).or_insert(0) += 1;
    }
    report.line(format!(
        "cold accounts           {} pools of {COLD_PER_POOL}: {cold_requests} requests, {cold_ok} 2xx, {}",
        pools.len(),
        format_map(&cold_errors)
    ));
    let mut recovery = String::new();
    for fault in ["mint-down", "mint-429"] {
        let mut times: Vec<f64> = pools
            .iter()
            .filter(|p| p.fault == fault && p.cleared != Duration::MAX)
            .filter_map(|p| Some((p.first_ok_after? - p.cleared).as_secs_f64()))
            .collect();
        let never = pools
            .iter()
            .filter(|p| p.fault == fault && p.cleared != Duration::MAX)
            .filter(|p| p.first_ok_after.is_none())
            .count();
        if times.is_empty() && never == 0 {
            continue;
        }
        let each = times
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            recovery,
            "{fault}: median {:.1} s ({each}){}; ",
            median(&mut times),
            if never > 0 {
                format!(", {never} pool(s) without a success before the end")
            } else {
                String::new()
            }
        );
    }
    report.line(format!(
        "cold recovery           first cold 2xx after the fault cleared: {}",
        recovery.trim_end_matches("; ")
    ));

    // Memory over the soak.
    let minute = |m: u64| {
        samples
            .iter()
            .rfind(|(t, _)| t.as_secs() <= m * 60)
            .map(|(_, s)| s)
    };
    let mut series = String::new();
    for m in 0..=args.minutes {
        if let Some(s) = minute(m) {
            let _ = write!(series, " m{m} {:.1}", s.rss_kib as f64 / 1024.0);
        }
    }
    let first = samples.first().map(|(_, s)| s.rss_kib).unwrap_or(0);
    let end = samples.last().map(|(_, s)| s.rss_kib).unwrap_or(0);
    let min_rss = samples.iter().map(|(_, s)| s.rss_kib).min().unwrap_or(0);
    let max_rss = samples.iter().map(|(_, s)| s.rss_kib).max().unwrap_or(0);
    let mut all_rss: Vec<f64> = samples.iter().map(|(_, s)| s.rss_kib as f64).collect();
    let median_rss = median(&mut all_rss);
    report.line(format!(
        "RSS by minute (MiB)    {series} end {:.1}",
        end as f64 / 1024.0
    ));
    // Every sample, one line per minute of the soak.
    report.line("RSS every 5 s (MiB), one line per minute:");
    for (m, chunk) in samples.chunks(12).enumerate() {
        let values: Vec<String> = chunk
            .iter()
            .map(|(_, s)| format!("{:.1}", s.rss_kib as f64 / 1024.0))
            .collect();
        report.line(format!("  m{m:<2} {}", values.join(" ")));
    }
    let fds_min = samples.iter().map(|(_, s)| s.fds).min().unwrap_or(0);
    let fds_max = samples.iter().map(|(_, s)| s.fds).max().unwrap_or(0);
    report.line(format!(
        "RSS                     start {}, end {}, settled {}; 5 s samples: min {} median {} max {}",
        mib(first),
        mib(end),
        mib(settled.rss_kib),
        mib(min_rss),
        mib(median_rss as u64),
        mib(max_rss)
    ));
    let growth_base = minute(1).map(|s| s.rss_kib).unwrap_or(first);
    let growth = end as f64 - growth_base as f64;
    let growth_pct = if growth_base > 0 {
        100.0 * growth / growth_base as f64
    } else {
        0.0
    };
    report.line(format!(
        "RSS growth m1 → end     {:+.2} MiB ({growth_pct:+.2}%)",
        growth / 1024.0
    ));
    // After one whole fault cycle every kind of fault has run once, the most requests in
    // flight at once included: a plateau reached then is a high-water mark, growth after
    // it would be a leak. Shorter runs are judged from minute 1.
    let cycle = SLOT * SCHEDULE.len() as u32;
    let (judged_from, judged_base) = if totals.took > cycle + Duration::from_secs(60) {
        let at_cycle = samples
            .iter()
            .rfind(|(t, _)| *t <= cycle)
            .map_or(first, |(_, s)| s.rss_kib);
        report.line(format!(
            "RSS growth {}s → end   {:+.2} MiB (after the first full fault cycle)",
            cycle.as_secs(),
            (end as f64 - at_cycle as f64) / 1024.0
        ));
        (
            format!("{} s (first full fault cycle)", cycle.as_secs()),
            at_cycle,
        )
    } else {
        ("minute 1".to_owned(), growth_base)
    };
    // Where RSS rose, and which phase was on then.
    let steps: Vec<String> = samples
        .windows(2)
        .filter(|w| w[1].1.rss_kib >= w[0].1.rss_kib + RSS_STEP_KIB)
        .map(|w| {
            let at = w[1].0;
            let phase = phases
                .iter()
                .rfind(|p| p.started <= w[0].0)
                .map_or("?", |p| p.label);
            format!(
                "{:+.1} MiB at {}-{} s ({phase})",
                (w[1].1.rss_kib - w[0].1.rss_kib) as f64 / 1024.0,
                w[0].0.as_secs(),
                at.as_secs()
            )
        })
        .collect();
    report.line(format!(
        "RSS steps ≥ {:.2} MiB    {}",
        RSS_STEP_KIB as f64 / 1024.0,
        if steps.is_empty() {
            "none".to_owned()
        } else {
            steps.join(", ")
        }
    ));
    let first_proc = samples.first().map(|(_, s)| s);
    let last_proc = samples.last().map(|(_, s)| s);
    if let (Some(a), Some(b)) = (first_proc, last_proc) {
        report.line(format!(
            "proxy                   threads {} → {}, fds {} → {} (min {fds_min}, max {fds_max}), CPU {:.1} s over the soak ({:.0}% of one core)",
            a.threads,
            b.threads,
            a.fds,
            b.fds,
            b.cpu_s - a.cpu_s,
            100.0 * (b.cpu_s - a.cpu_s) / totals.took.as_secs_f64()
        ));
    }
    report.check(
        unexpected.is_empty(),
        format!(
            "soak: {} unexpected errors",
            unexpected.values().sum::<u64>()
        ),
    );
    let judged = end as f64 - judged_base as f64;
    let limit = (judged_base as f64 * GROWTH_LIMIT_FRACTION).max(GROWTH_LIMIT_MIN_KIB);
    report.check(
        judged <= limit,
        format!(
            "soak: RSS growth from {judged_from} to the end {:+.2} MiB (limit {:.2} MiB: {:.0}% of \
             that RSS, at least 1 MiB)",
            judged / 1024.0,
            limit / 1024.0,
            GROWTH_LIMIT_FRACTION * 100.0
        ),
    );
    report.check(
        requests == totals.issued,
        format!(
            "soak: {requests} of {} sent requests completed",
            totals.issued
        ),
    );
}

// ---------------------------------------------------------------------------------------
// The child: its address, its log, its /proc figures.

/// Reads the proxy's JSON log until its listen line; then keeps draining and counting.
async fn read_listen_address(
    stderr: tokio::process::ChildStderr,
    logs: Arc<LogStats>,
) -> Result<String, BoxError> {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            let listen = logs.add(&line);
            if let Some(listen) = listen {
                return Ok::<_, BoxError>(listen);
            }
        }
        Err(format!("the proxy closed its log before listening: {}", logs.tail()).into())
    })
    .await
    .map_err(|_| "the proxy did not log a listen address within 30 s")??;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            logs.add(&line);
        }
    });
    Ok(addr)
}

/// Counts of the proxy's log lines by level and by (level, message) for warnings and
/// errors, plus the last few lines.
#[derive(Default)]
struct LogStats {
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    levels: BTreeMap<String, u64>,
    messages: BTreeMap<String, u64>,
    tail: std::collections::VecDeque<String>,
}

impl LogStats {
    /// Counts one line; returns `fields.listen` if it has one.
    fn add(&self, line: &str) -> Option<String> {
        let event: Option<serde_json::Value> = serde_json::from_str(line).ok();
        let mut inner = lock(&self.inner);
        inner.tail.push_back(line.chars().take(400).collect());
        if inner.tail.len() > 12 {
            inner.tail.pop_front();
        }
        let event = event?;
        let level = event["level"].as_str().unwrap_or("?").to_owned();
        if level == "WARN" || level == "ERROR" {
            let message = event["fields"]["message"].as_str().unwrap_or("?");
            let detail = event["fields"]["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            *inner
                .messages
                .entry(format!("{level} {message}{detail}"))
                .or_insert(0) += 1;
        }
        *inner.levels.entry(level).or_insert(0) += 1;
        event["fields"]["listen"].as_str().map(str::to_owned)
    }

    fn tail(&self) -> String {
        let inner = lock(&self.inner);
        inner.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn summary(&self) -> String {
        let inner = lock(&self.inner);
        let mut text = format_map(&inner.levels);
        let mut messages: Vec<(&String, &u64)> = inner.messages.iter().collect();
        messages.sort_by(|a, b| b.1.cmp(a.1));
        for (message, n) in messages.iter().take(8) {
            let _ = write!(text, "\n                  {n:>7} × {message}");
        }
        text
    }
}

/// Figures of one process from `/proc`.
#[derive(Clone, Debug, Default)]
struct ProcStats {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: usize,
    cpu_s: f64,
}

impl ProcStats {
    fn read(pid: u32) -> Self {
        let mut stats = Self::default();
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                let number = |line: &str| {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmRSS:") {
                    stats.rss_kib = number(line);
                } else if line.starts_with("VmHWM:") {
                    stats.hwm_kib = number(line);
                } else if line.starts_with("Threads:") {
                    stats.threads = number(line);
                }
            }
        }
        stats.fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        // utime and stime, fields 14 and 15, in USER_HZ (100 on Linux) ticks; the command
        // name in field 2 may hold spaces, so count from its closing parenthesis.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| {
                    fields
                        .get(i)
                        .and_then(|f| f.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                stats.cpu_s = (ticks(11) + ticks(12)) as f64 / 100.0;
            }
        }
        stats
    }
}

/// A private directory for the config file, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("refold-proxy-soak-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(us: u32) -> String {
    format!("{:.1} ms", f64::from(us) / 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn format_map(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        String::new()
    } else {
        format!(" ({})", format_map(map))
    }
}

/// `2026-01-31 12:34` from the system clock.
fn utc_timestamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = secs / 86_400 + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `<target>/release/refold-proxy` for a binary in a cargo target directory, so that the
/// summary does not carry this machine's paths; any other path as given.
fn shown_path(bin: &Path) -> String {
    let parts: Vec<_> = bin.components().rev().take(2).collect();
    match parts.as_slice() {
        [name, profile] if profile.as_os_str() == "release" => {
            format!("<target>/release/{}", name.as_os_str().to_string_lossy())
        }
        _ => bin.display().to_string(),
    }
}

/// CPUs, memory and kernel of this machine, from `/proc`.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(Path::new(path)).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "{cpus} vCPU ({model}), {:.1} GiB RAM, Linux {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim()
    )
}
