//! `rollgate status|wait|get|promote|abort|retry|pause|resume`: the Rollout from a terminal or
//! a pipeline, through the kubeconfig like kubectl. Actions are annotations (promote, abort,
//! retry) and `spec.paused`, so they work the same from GitOps; each prints what it changed.

use std::io::IsTerminal;
use std::time::Duration;

use tokio::time::Instant;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use rollgate_crds::Rollout;
use rollgate_crds::duration::PositiveDuration;
use rollgate_crds::labels::{ACTION_ABORT, ACTION_PROMOTE, ACTION_RETRY};
use rollgate_crds::rollout::Phase;
use serde_json::json;

use super::view::{self, WaitExit, WaitFor};
use super::{EXIT_CODES, Exit};
pub use crate::connection::KubeArgs;
use crate::rollout_watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    /// Redraw on every change until a verdict (then exit as `wait --for verdict` would).
    #[arg(short, long)]
    pub watch: bool,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct WaitArgs {
    pub name: String,
    /// verdict (pass or fail), promoted, or step=N (the rollout at step N or beyond).
    #[arg(long = "for", default_value = "verdict")]
    pub target: WaitFor,
    /// Give up after this long (exit 2).
    #[arg(long, default_value = "30m")]
    pub timeout: PositiveDuration,
    /// Exit 4 when no controller has acted on the latest change of the Rollout for this long
    /// (none running, or none whose scope includes it).
    #[arg(long, default_value = "60s")]
    pub observe_timeout: PositiveDuration,
    /// Print only the final status, not a line per transition and a heartbeat every minute.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Rollouts of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// A table, or every Rollout as `status -o json|yaml` shows one (a list).
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub name: String,
    /// Skip the remaining steps and promote to 100 % now (default: the next step).
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
}

pub enum Command {
    Status(StatusArgs),
    Wait(WaitArgs),
    Get(GetArgs),
    Promote(PromoteArgs),
    Abort(NameArgs),
    Retry(NameArgs),
    Pause(NameArgs),
    Resume(NameArgs),
}

/// A failure of a CLI command: what to print and how to exit.
struct Failure(Exit, String);

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        Failure(Exit::Usage, describe(&e))
    }
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => format!("not found: {}", s.message),
        kube::Error::Api(s) if s.code == 403 => format!("forbidden: {}", s.message),
        kube::Error::Api(s) if s.code == 401 => format!("unauthorized: {}", s.message),
        other => format!("talking to the API server: {other}"),
    }
}

pub fn run(kube: KubeArgs, command: Command) -> Exit {
    super::block_on(async {
        match dispatch(kube, command).await {
            Ok(exit) => exit,
            Err(Failure(exit, message)) => {
                eprintln!("rollgate: {message}");
                exit
            }
        }
    })
}

async fn connect(k: &KubeArgs) -> Result<(Client, String), Failure> {
    let config = k.config().await.map_err(|e| Failure(Exit::Usage, e.to_string()))?;
    let namespace = k.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Failure(Exit::Usage, format!("client: {e}")))?;
    Ok((client, namespace))
}

async fn dispatch(k: KubeArgs, command: Command) -> Result<Exit, Failure> {
    let (client, ns) = connect(&k).await?;
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    match command {
        Command::Status(a) => status(&api, &ns, a).await,
        Command::Wait(a) => wait(&api, &ns, a).await,
        Command::Get(a) => {
            let api: Api<Rollout> = if a.all_namespaces { Api::all(client) } else { api };
            let list = api.list(&ListParams::default()).await?;
            if a.output != Format::Text {
                let views: Vec<view::View> = list.items.iter().map(view::view).collect();
                print!("{}", render_views(&views, a.output)?);
                return Ok(Exit::Pass);
            }
            let now = Timestamp::now();
            let rows: Vec<[String; 6]> = list.items.iter().map(|ro| view::row(ro, now)).collect();
            if rows.is_empty() {
                eprintln!(
                    "no rollouts{}",
                    if a.all_namespaces { String::new() } else { format!(" in namespace {ns}") }
                );
            } else {
                print!("{}", view::table(["NAMESPACE", "NAME", "PHASE", "WEIGHT", "VERDICT", "AGE"], &rows));
            }
            Ok(Exit::Pass)
        }
        Command::Promote(a) => {
            let ro = get(&api, &ns, &a.name).await?;
            in_flight(&ro, "promote")?;
            let value = if a.full { format!("full-{}", token()) } else { token() };
            annotate(&api, &a.name, ACTION_PROMOTE, &value).await?;
            let what = if a.full {
                "skip the remaining steps and promote"
            } else {
                "raise the weight to the next step"
            };
            println!("rollout {ns}/{}: annotation {ACTION_PROMOTE}={value} set ({what})", a.name);
            report_handled(&api, &ns, &a.name, Action::Promote, &value).await;
            Ok(Exit::Pass)
        }
        Command::Abort(a) => {
            let ro = get(&api, &ns, &a.name).await?;
            in_flight(&ro, "abort")?;
            let value = token();
            annotate(&api, &a.name, ACTION_ABORT, &value).await?;
            println!("rollout {ns}/{}: annotation {ACTION_ABORT}={value} set (roll back now)", a.name);
            report_handled(&api, &ns, &a.name, Action::Abort, &value).await;
            Ok(Exit::Pass)
        }
        Command::Retry(a) => {
            let ro = get(&api, &ns, &a.name).await?;
            let phase = ro.status.as_ref().and_then(|s| s.phase);
            if phase != Some(Phase::RolledBack) {
                return Err(Failure(
                    Exit::Usage,
                    format!(
                        "rollout {ns}/{} is {}, not rolled back: nothing to retry",
                        a.name,
                        phase_word(phase)
                    ),
                ));
            }
            let value = token();
            annotate(&api, &a.name, ACTION_RETRY, &value).await?;
            println!(
                "rollout {ns}/{}: annotation {ACTION_RETRY}={value} set (start the same version again)",
                a.name
            );
            report_handled(&api, &ns, &a.name, Action::Retry, &value).await;
            Ok(Exit::Pass)
        }
        Command::Pause(a) => set_paused(&api, &ns, &a.name, true).await,
        Command::Resume(a) => set_paused(&api, &ns, &a.name, false).await,
    }
}

async fn get(api: &Api<Rollout>, ns: &str, name: &str) -> Result<Rollout, Failure> {
    match api.get_opt(name).await? {
        Some(ro) => Ok(ro),
        None => Err(Failure(Exit::Usage, format!("rollout {ns}/{name} not found"))),
    }
}

fn phase_word(p: Option<Phase>) -> String {
    p.map_or("pending".into(), |p| format!("{p:?}"))
}

/// Promote and abort act on a canary in flight; asked at another time they would be ignored
/// (the controller marks them handled with an `ActionIgnored` Event).
fn in_flight(ro: &Rollout, action: &str) -> Result<(), Failure> {
    let phase = ro.status.as_ref().and_then(|s| s.phase);
    if matches!(phase, Some(Phase::Progressing | Phase::Paused)) {
        return Ok(());
    }
    Err(Failure(
        Exit::Usage,
        format!(
            "rollout {}/{} is {}: no canary in flight to {action}",
            ro.metadata.namespace.as_deref().unwrap_or_default(),
            ro.metadata.name.as_deref().unwrap_or_default(),
            phase_word(phase)
        ),
    ))
}

/// A fresh value for a one-shot action annotation.
fn token() -> String {
    Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ").to_string()
}

async fn annotate(api: &Api<Rollout>, name: &str, key: &str, value: &str) -> Result<(), Failure> {
    let patch = json!({ "metadata": { "annotations": { key: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Promote,
    Abort,
    Retry,
}

/// How long an action command waits for the controller to take the request.
const HANDLED_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (briefly) until the controller records `token` as handled, and says so: a `wait`
/// started right after then sees the rollout as the action left it, not as it was before.
async fn report_handled(api: &Api<Rollout>, ns: &str, name: &str, action: Action, token: &str) {
    let handled = |ro: &Rollout| {
        let h = ro.status.as_ref().and_then(|s| s.handled_actions.as_ref());
        let done = match action {
            Action::Promote => h.and_then(|h| h.promote.as_deref()),
            Action::Abort => h.and_then(|h| h.abort.as_deref()),
            Action::Retry => h.and_then(|h| h.retry.as_deref()),
        };
        done == Some(token)
    };
    let taken = rollout_watch::until(api, name, None, handled);
    match tokio::time::timeout(HANDLED_WITHIN, taken).await {
        Ok(Ok(ro)) => {
            let v = view::view(&ro);
            let step = v.step.map(|s| format!(", step {s} of {}", v.steps.len())).unwrap_or_default();
            println!(
                "rollout {ns}/{name}: the controller took it: {}, canary weight {} %{step}",
                phase_word(v.phase),
                v.canary_weight
            );
        }
        _ => println!(
            "rollout {ns}/{name}: the controller has not taken it within {}s (is it running?); it acts on it when it does",
            HANDLED_WITHIN.as_secs()
        ),
    }
}

async fn set_paused(api: &Api<Rollout>, ns: &str, name: &str, paused: bool) -> Result<Exit, Failure> {
    let ro = get(api, ns, name).await?;
    if ro.spec.paused == paused {
        println!("rollout {ns}/{name}: spec.paused is already {paused}; nothing changed");
        return Ok(Exit::Pass);
    }
    api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "paused": paused } }))).await?;
    let what = if paused { "hold at the current weight" } else { "continue stepping" };
    println!("rollout {ns}/{name}: spec.paused set to {paused} ({what})");
    Ok(Exit::Pass)
}

async fn status(api: &Api<Rollout>, ns: &str, a: StatusArgs) -> Result<Exit, Failure> {
    let tty = std::io::stdout().is_terminal();
    let ro = get(api, ns, &a.name).await?;
    if !a.watch {
        print!("{}", show(&ro, a.output, tty)?);
        return Ok(Exit::Pass);
    }
    let mut last = String::new();
    let mut stream = rollout_watch::changes(api, &a.name);
    let mut current = Some(ro);
    loop {
        if let Some(ro) = current.take() {
            let text = show(&ro, a.output, tty)?;
            if text != last {
                if tty && a.output == Format::Text {
                    print!("\x1b[2J\x1b[H");
                } else if !last.is_empty() {
                    println!();
                }
                print!("{text}");
                last = text;
            }
            if let Some(exit) = view::waited(&ro, WaitFor::Verdict).exit() {
                return Ok(exit);
            }
        }
        match stream.next().await {
            Some(Ok(ro)) => current = Some(ro),
            // The watch resumes with backoff; a blip of the API server does not end it.
            Some(Err(e)) => tracing::debug!(error = %e, "watch interrupted; resuming"),
            None => return Err(Failure(Exit::Usage, format!("the watch of {ns}/{} ended", a.name))),
        }
    }
}

fn show(ro: &Rollout, format: Format, tty: bool) -> Result<String, Failure> {
    let v = view::view(ro);
    match format {
        Format::Text => Ok(view::render(&v, tty, Timestamp::now())),
        Format::Json | Format::Yaml => render_views(&v, format),
    }
}

/// How often a wait says it is still waiting.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// Views as JSON or YAML.
fn render_views<T: serde::Serialize>(views: &T, format: Format) -> Result<String, Failure> {
    let fail = |e: String| Failure(Exit::Usage, format!("rendering: {e}"));
    match format {
        Format::Json | Format::Text => {
            serde_json::to_string_pretty(views).map(|s| s + "\n").map_err(|e| fail(e.to_string()))
        }
        Format::Yaml => serde_yaml::to_string(views).map_err(|e| fail(e.to_string())),
    }
}

async fn wait(api: &Api<Rollout>, ns: &str, a: WaitArgs) -> Result<Exit, Failure> {
    let started = Instant::now();
    let deadline = started + a.timeout.as_std();
    let mut latest = get(api, ns, &a.name).await?;
    let mut stream = rollout_watch::changes(api, &a.name);
    let mut heartbeat = tokio::time::interval_at(started + HEARTBEAT, HEARTBEAT);
    let mut printed = String::new();
    // Since when the latest change has waited for a controller to act on it.
    let mut unobserved: Option<Instant> = None;
    let say = |line: &str| {
        if !a.quiet {
            println!("[{}] {line}", rollgate_gate::format::human(started.elapsed()));
        }
    };
    let (exit, note) = loop {
        let v = view::view(&latest);
        let line = view::transition_line(&v);
        if line != printed {
            say(&line);
            printed = line;
        }
        if let Some(exit) = view::waited(&latest, a.target).exit() {
            let note = match exit {
                Exit::Pass => "reached".to_string(),
                Exit::Fail => "rolled back or failed".to_string(),
                _ => "paused: waiting for a person (rollgate resume, promote or abort)".to_string(),
            };
            break (exit, note);
        }
        let since = if v.up_to_date { None } else { Some(*unobserved.get_or_insert_with(Instant::now)) };
        unobserved = since;
        let unobserved_deadline = since.map(|t| t + a.observe_timeout.as_std());
        if unobserved_deadline.is_some_and(|d| d <= Instant::now()) {
            let generation = latest.metadata.generation.unwrap_or_default();
            let note = format!(
                "no controller has observed generation {generation} within {}: is rollgate running, and does \
                 its scope (--namespace, --instance) include this Rollout?",
                rollgate_gate::format::human(a.observe_timeout.as_std())
            );
            break (Exit::Usage, note);
        }
        let observe_by = unobserved_deadline.unwrap_or(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if let Ok(Some(ro)) = api.get_opt(&a.name).await {
                    latest = ro;
                }
                break (Exit::Timeout, format!("timed out after {}", rollgate_gate::format::human(a.timeout.as_std())));
            }
            // Wakes the loop to check the bound on a change nobody acted on.
            () = tokio::time::sleep_until(observe_by), if unobserved_deadline.is_some() => {}
            _ = heartbeat.tick() => say(&view::heartbeat_line(&v)),
            next = stream.next() => match next {
                Some(Ok(ro)) => latest = ro,
                // The watch resumes with backoff; a blip of the API server does not end the wait.
                Some(Err(e)) => tracing::debug!(error = %e, "watch interrupted; resuming"),
                None => return Err(Failure(Exit::Usage, format!("the watch of {ns}/{} ended", a.name))),
            },
        }
    };
    print!("{}", view::render(&view::view(&latest), false, Timestamp::now()));
    println!("wait --for {}: {note} (exit {})", target_word(a.target), exit as u8);
    Ok(exit)
}

fn target_word(t: WaitFor) -> String {
    match t {
        WaitFor::Verdict => "verdict".into(),
        WaitFor::Promoted => "promoted".into(),
        WaitFor::Step(n) => format!("step={n}"),
    }
}
