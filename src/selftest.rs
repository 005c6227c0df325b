//! `refold-proxy selftest`: probes a live deployment from outside, as an attacker would,
//! and reports each check as pass, fail, skip or note. Exit 0 when nothing failed, 1 when
//! a check failed, 2 when the probe could not run (bad arguments, deployment unreachable).
//!
//! It sends GETs, CORS preflights and requests the proxy must refuse; the few probes
//! that could change state at Refold if the proxy were broken are sent only with
//! `--allow-writes`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

mod checks;
mod jwt;
mod probe;
mod scan;
mod tls;

/// Where `--jwt` is read from when the flag is not given.
const JWT_ENV: &str = "SELFTEST_JWT";
/// Where `--expired-jwt` is read from when the flag is not given.
const EXPIRED_JWT_ENV: &str = "SELFTEST_EXPIRED_JWT";

/// Arguments of `refold-proxy selftest`.
#[derive(Debug, clap::Args)]
pub(crate) struct SelftestArgs {
    /// The proxy's base URL as the SDK is given it (its mount path included).
    #[arg(long, value_name = "URL")]
    url: String,
    /// A valid app JWT for a test account [default: the SELFTEST_JWT environment
    /// variable, which keeps it out of the process list].
    #[arg(
        long,
        value_name = "JWT",
        default_value = "",
        hide_default_value = true
    )]
    jwt: String,
    /// An origin the proxy allows (`cors.allowed_origins`): its preflight must be answered.
    #[arg(long, value_name = "ORIGIN")]
    origin: Option<String>,
    /// An origin the proxy must not allow.
    #[arg(
        long,
        value_name = "ORIGIN",
        default_value = "https://refold-selftest.invalid"
    )]
    foreign_origin: String,
    /// Also send the probes that would change state at Refold if the proxy let them
    /// through (POSTs naming another account, POSTs to token routes).
    #[arg(long)]
    allow_writes: bool,
    /// An expired app JWT, for the expiry check (skipped without it) [default: the
    /// SELFTEST_EXPIRED_JWT environment variable].
    #[arg(long, value_name = "JWT")]
    expired_jwt: Option<String>,
    /// A PEM file of CA certificates to trust besides the webpki roots (a private CA).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    Pass,
    Fail,
    Skip,
    /// Worth knowing, neither right nor wrong.
    Note,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::Note => "note",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    name: &'static str,
    outcome: Outcome,
    /// One line; never a credential.
    reason: String,
}

impl Check {
    pub(crate) fn new(name: &'static str, outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            name,
            outcome,
            reason: reason.into(),
        }
    }

    /// `Pass` with `pass` when `problem` is `None`, else `Fail` with the problem.
    pub(crate) fn verdict(name: &'static str, problem: Option<String>, pass: &str) -> Self {
        match problem {
            None => Self::new(name, Outcome::Pass, pass),
            Some(problem) => Self::new(name, Outcome::Fail, problem),
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    url: &'a str,
    ok: bool,
    checks: &'a [Check],
}

/// Runs the self-test and prints the report; the exit code says how it went.
pub(crate) fn run(mut args: SelftestArgs) -> ExitCode {
    // From the environment, a JWT stays out of `ps` and the shell history.
    if args.jwt.is_empty() {
        match std::env::var(JWT_ENV) {
            Ok(jwt) if !jwt.is_empty() => args.jwt = jwt,
            _ => return could_not_run(&format!("--jwt (or {JWT_ENV}) is required")),
        }
    }
    if args.expired_jwt.is_none() {
        args.expired_jwt = std::env::var(EXPIRED_JWT_ENV)
            .ok()
            .filter(|v| !v.is_empty());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return could_not_run(&format!("cannot start the runtime: {e}")),
    };
    let checks = match runtime.block_on(checks::run_all(&args)) {
        Ok(checks) => checks,
        Err(e) => return could_not_run(&e),
    };
    let ok = checks.iter().all(|c| c.outcome != Outcome::Fail);
    if args.json {
        let report = Report {
            url: &args.url,
            ok,
            checks: &checks,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return could_not_run(&format!("cannot write the report: {e}")),
        }
    } else {
        print!("{}", table(&args.url, &checks));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn could_not_run(why: &str) -> ExitCode {
    eprintln!("refold-proxy selftest: could not run: {why}");
    ExitCode::from(2)
}

/// The report as a table: name, outcome, reason; then a summary line.
fn table(url: &str, checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = format!("selftest of {url}\n\n");
    for check in checks {
        out.push_str(&format!(
            "{:width$}  {:4}  {}\n",
            check.name,
            check.outcome.label(),
            check.reason
        ));
    }
    let count = |o: Outcome| checks.iter().filter(|c| c.outcome == o).count();
    out.push_str(&format!(
        "\n{} passed, {} failed, {} skipped, {} notes\n",
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Skip),
        count(Outcome::Note)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_aligned_line_per_check_and_a_summary() {
        let checks = [
            Check::new("token-routes", Outcome::Pass, "all refused"),
            Check::new("hsts", Outcome::Note, "not sent"),
            Check::new("jwt-expired", Outcome::Fail, "answered 200"),
        ];
        let text = table("https://p.example", &checks);
        assert!(text.contains("token-routes  pass  all refused\n"), "{text}");
        assert!(text.contains("hsts          note  not sent\n"), "{text}");
        assert!(
            text.ends_with("1 passed, 1 failed, 0 skipped, 1 notes\n"),
            "{text}"
        );
    }
}
