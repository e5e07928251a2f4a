//! The `gitfleet` admin CLI.
//!
//! [`run`] executes parsed arguments against a hub and writes everything it prints to the given
//! writer, so tests and the e2e harness call it in-process and read the output; the binary is
//! `Cli::parse()` plus [`run_with`] on stdout. Errors come back as [`CliError`], whose
//! [`CliError::exit_code`] is what the binary exits with (0 ok, 1 failed, 2 usage).
//!
//! Modules: [`args`] (clap), [`documents`] (files → resource documents), [`output`] (answers →
//! tables, JSON, YAML; pure), [`config_cmd`] (the credentials file), `watch` (`status --watch`
//! and `--wait`). The gRPC edge is [`crate::client::AdminClient`].

pub mod args;
pub mod config_cmd;
pub mod describe;
pub mod diff;
pub mod documents;
pub mod freeze;
pub mod notifier;
pub mod output;
pub mod rollout;
pub mod users;
mod watch;

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use gitfleet_proto::v1 as pb;

pub use args::{Cli, ColorChoice, Command, OutputFormat};

use crate::client::config::ConfigError;
use crate::client::{AdminClient, AppVerb, ClientError, RolloutVerb};
use args::{
    AppCommand, ClusterCommand, ConfigCommand, CreateCommand, FreezeCommand, KindArg,
    NotifierCommand, RepoCommand, RolloutCommand, TokenCommand, UserCommand,
};
use documents::DocumentError;
use gitfleet_core::cluster_labels::{LabelChanges, parse_label_arg};
use output::Style;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command line (clap's message, with usage).
    #[error("{0}")]
    Usage(String),
    #[error(
        "no gitfleet config at {path}; import the hub's admin credential with `gitfleet config import DATA_DIR/admin.gitfleetconfig`, or pass --config FILE / set GITFLEET_CONFIG"
    )]
    NoConfig { path: PathBuf },
    #[error(
        "no context named {name:?} in {path} (contexts: {available}); pick one with --context or `gitfleet config use-context NAME`"
    )]
    NoSuchContext {
        name: String,
        path: PathBuf,
        available: String,
    },
    #[error(
        "{path} has no current-context (contexts: {available}); pass --context NAME or run `gitfleet config use-context NAME`"
    )]
    NoCurrentContext { path: PathBuf, available: String },
    #[error(
        "cannot import {file}: no such file; the hub writes it as DATA_DIR/admin.gitfleetconfig on first start"
    )]
    ImportMissing { file: PathBuf },
    #[error("cannot import {file}: {source}")]
    Import {
        file: PathBuf,
        source: config_cmd::ImportError,
    },
    #[error(
        "cannot find your home directory ($HOME is not set); pass --config FILE or set GITFLEET_CONFIG"
    )]
    NoHome,
    #[error("no active user named {name:?}; see `gitfleet user list`")]
    NoSuchUser { name: String },
    #[error("no freeze named {name:?}; see `gitfleet freeze list`")]
    NoSuchFreeze { name: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}; nothing was applied")]
    Documents(#[from] DocumentError),
    #[error("{kind} {name:?} not found; list what exists with `gitfleet get {plural}`")]
    NotFound {
        kind: String,
        name: String,
        plural: String,
    },
    #[error(
        "no registration named {name:?} is waiting for approval; list those waiting with `gitfleet cluster pending` (registered clusters, in `gitfleet cluster list`, need no approval)"
    )]
    NotPending { name: String },
    #[error(
        "cluster {name:?} not found; list clusters with `gitfleet cluster list` and registrations waiting for approval with `gitfleet cluster pending`"
    )]
    NoSuchCluster { name: String },
    #[error("{0}; no label was changed")]
    LabelChanges(String),
    #[error(
        "token {id:?} not found; list token ids with `gitfleet token list` (the id, not the gft_ secret)"
    )]
    NoSuchToken { id: String },
    #[error(
        "`all` lists every kind; delete needs one: repo, app, clustergroup, project, healthrule, notifier, token, user or freeze"
    )]
    DeleteAll,
    #[error(
        "describe takes one app, cluster, repo, clustergroup, project, healthrule or notifier; list tokens, users and freezes with `gitfleet get KIND`, every kind with `gitfleet get all`"
    )]
    DescribeAll,
    #[error("clusters are not deleted: revoke one with `gitfleet cluster revoke NAME`")]
    DeleteCluster,
    #[error("{kind} have no labels to select by (-l): list them all with `gitfleet get {kind}`")]
    NoLabels { kind: &'static str },
    #[error("repo/{repo}: fetch failed: {error}")]
    RefreshFailed { repo: String, error: String },
    #[error(
        "repo/{repo}: no fetch finished within {after}; the hub may be busy with other Repos (see `gitfleet get repo {repo}`)"
    )]
    RefreshTimeout { repo: String, after: String },
    #[error("label selector {selector:?}: {problem}")]
    Selector { selector: String, problem: String },
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    #[error("timed out after {after} waiting for Targets to be synced and healthy: {pending}")]
    WaitTimeout { after: String, pending: String },
    /// `gitfleet diff` found differences (already printed): exit 1, no error message.
    #[error("{count} resource(s) differ from the hub")]
    Differences { count: usize },
    /// `rollout status --watch` ended without the rollout completing.
    #[error("rollout of {app} {state}: {reason}")]
    RolloutStopped {
        app: String,
        state: String,
        reason: String,
    },
    /// `gitfleet diff` could not compare: exit 2, as `diff` and `kubectl diff` do.
    #[error(transparent)]
    DiffFailed(Box<CliError>),
    /// `gitfleet diff --live` could not compare on some clusters (what it could is printed):
    /// exit 2.
    #[error("could not compare on {count} cluster(s): {clusters}")]
    LiveDiffIncomplete { count: usize, clusters: String },
}

impl CliError {
    /// What the process exits with: 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::DeleteAll
            | CliError::DescribeAll
            | CliError::DeleteCluster
            | CliError::NoLabels { .. }
            | CliError::Selector { .. }
            | CliError::DiffFailed(_)
            | CliError::LiveDiffIncomplete { .. } => 2,
            _ => 1,
        }
    }

    /// Whether the error is an outcome already printed (so the binary prints no `error:` line).
    pub fn is_reported(&self) -> bool {
        matches!(self, CliError::Differences { .. })
    }
}

/// Parses `args` (the first is the program name) and runs them, printing to `out` without colour.
/// `--help` and `--version` print to `out`; usage errors come back as [`CliError::Usage`] with
/// clap's text.
pub async fn run_args<I, T>(args: I, out: &mut (dyn Write + Send)) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli, out).await,
        Err(e) if e.exit_code() == 0 => write_out(out, &e.render().to_string()),
        Err(e) => Err(CliError::Usage(e.render().to_string())),
    }
}

/// Runs parsed arguments, printing to `out`, which is taken not to be a terminal (no colour
/// unless `--color always`).
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    run_with(cli, out, false).await
}

/// Runs parsed arguments; `out_is_terminal` lets `--color auto` colour tables.
pub async fn run_with(
    cli: Cli,
    out: &mut (dyn Write + Send),
    out_is_terminal: bool,
) -> Result<(), CliError> {
    let color = wants_color(
        cli.global.color,
        out_is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let style = Style {
        color,
        now_unix: now_unix(),
    };
    if let Command::Status(s) = &cli.command
        && (s.watch || s.wait)
    {
        let mut client = connect(&cli.global).await?;
        return watch::status(
            &mut client,
            s,
            cli.global.output,
            out,
            out_is_terminal,
            color,
        )
        .await;
    }
    if let Command::Rollout(RolloutCommand::Status(r)) = &cli.command
        && r.watch
    {
        let mut client = connect(&cli.global).await?;
        return rollout::watch(
            &mut client,
            r,
            cli.global.output,
            out,
            out_is_terminal,
            color,
        )
        .await;
    }
    if let Command::Events(e) = &cli.command
        && e.watch
    {
        let mut client = connect(&cli.global).await?;
        return rollout::watch_events(&mut client, e, cli.global.output, out, color).await;
    }
    if let Command::Diff(d) = &cli.command {
        return diff::run(&cli.global, d, out, style).await;
    }
    let text = execute(cli, style).await?;
    write_out(out, &text)
}

/// Writes and flushes; `gitfleet status | head` closing the pipe early is not a failure.
fn write_out(out: &mut (dyn Write + Send), text: &str) -> Result<(), CliError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// Dials the hub of the selected context.
async fn connect(global: &args::GlobalArgs) -> Result<AdminClient, CliError> {
    let path = config_cmd::config_path(global.config.as_deref())?;
    let config = config_cmd::load(&path)?;
    let context = config_cmd::select(&config, global.context.as_deref(), &path)?;
    Ok(AdminClient::connect(context).await?)
}

/// `--color auto` colours only a terminal, and never when `NO_COLOR` is set to anything
/// non-empty (<https://no-color.org>).
pub fn wants_color(
    choice: ColorChoice,
    out_is_terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => out_is_terminal && no_color.is_none_or(|v| v.is_empty()),
    }
}

/// Whether the binary's stdout should get colour under `--color auto`.
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

async fn execute(cli: Cli, style: Style) -> Result<String, CliError> {
    let global = cli.global;
    let format = global.output;
    let config_path = || config_cmd::config_path(global.config.as_deref());
    let connect = || connect(&global);

    match cli.command {
        Command::Apply(a) => {
            let docs = documents::load(&a.files, &mut std::io::stdin())?;
            let documents = docs
                .into_iter()
                .map(|d| pb::ResourceDocument {
                    origin: d.origin,
                    json: d.value.to_string(),
                })
                .collect();
            let outcomes = connect().await?.apply(documents, a.dry_run).await?;
            let report = output::apply_report(&outcomes, a.dry_run);
            Ok(output::render(format, &report, || {
                output::apply_text(&report, style)
            }))
        }
        Command::Get(g)
            if matches!(g.kind, KindArg::Tokens | KindArg::Users | KindArg::Freezes) =>
        {
            if g.selector.is_some() {
                return Err(CliError::NoLabels {
                    kind: plural(g.kind),
                });
            }
            let name = g.name.as_deref();
            match g.kind {
                KindArg::Tokens => list_tokens(&global, name, style).await,
                KindArg::Users => list_users(&global, name, style).await,
                _ => list_freezes(&global, name, style).await,
            }
        }
        Command::Get(g) => {
            let selector = g.selector.as_deref().map(parse_selector).transpose()?;
            let name = g.name.clone().unwrap_or_default();
            if g.kind == KindArg::Clusters {
                let mut clusters = connect().await?.list_clusters().await?;
                clusters.retain(|c| {
                    !c.revoked
                        && (name.is_empty() || c.name == name)
                        && selects(selector.as_ref(), c.labels.iter())
                });
                if g.name.is_some() && clusters.is_empty() {
                    return Err(CliError::NoSuchCluster { name });
                }
                let report = output::cluster_list_report(&clusters);
                return Ok(output::render(format, &report, || {
                    output::cluster_table(&report, style)
                }));
            }
            let docs = connect().await?.get(g.kind.api_kind(), &name).await?;
            if g.name.is_some() && docs.is_empty() {
                return Err(not_found(g.kind, &name));
            }
            let mut values = output::resource_values(&docs);
            if let Some(selector) = &selector {
                values.retain(|v| {
                    let labels = v
                        .pointer("/metadata/labels")
                        .and_then(|l| l.as_object())
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, v)| Some((k, v.as_str()?)));
                    selects(Some(selector), labels)
                });
            }
            let table = output::resources_table(&values, style);
            let document = output::resource_document(values, g.name.is_some());
            Ok(output::render(format, &document, || table))
        }
        Command::Describe(d) => {
            if matches!(
                d.kind,
                KindArg::All | KindArg::Tokens | KindArg::Users | KindArg::Freezes
            ) {
                return Err(CliError::DescribeAll);
            }
            let mut client = connect().await?;
            if d.kind == KindArg::Clusters {
                let cluster = client
                    .list_clusters()
                    .await?
                    .into_iter()
                    .find(|c| c.name == d.name)
                    .ok_or_else(|| CliError::NoSuchCluster {
                        name: d.name.clone(),
                    })?;
                let targets = client.status("", &d.name).await?;
                let events = latest_events(&mut client, "", &d.name, d.events).await?;
                let report = describe::ClusterDescription {
                    cluster: output::cluster_report(&cluster),
                    targets: output::status_report(&targets),
                    events: rollout::events_report(&events),
                };
                return Ok(output::render(format, &report, || {
                    describe::cluster_text(&report, style)
                }));
            }
            let docs = client.get(d.kind.api_kind(), &d.name).await?;
            let Some(resource) = output::resource_values(&docs).into_iter().next() else {
                return Err(not_found(d.kind, &d.name));
            };
            let is_app = d.kind == KindArg::Apps;
            let (rollout, targets) = if is_app {
                // An App without a revision has no rollout yet: that is no error.
                let rollout = match client.rollout(&d.name).await {
                    Ok(r) => Some(rollout::rollout_report(&r)),
                    Err(ClientError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                let targets = client.status(&d.name, "").await?;
                (rollout, Some(output::status_report(&targets)))
            } else {
                (None, None)
            };
            // Events are kept per App (and cluster); other kinds have none of their own.
            let events = if is_app {
                latest_events(&mut client, &d.name, "", d.events).await?
            } else {
                Vec::new()
            };
            let report = describe::ResourceDescription {
                resource,
                rollout,
                targets,
                events: rollout::events_report(&events),
            };
            Ok(output::render(format, &report, || {
                describe::resource_text(&report, style)
            }))
        }
        Command::Delete(d) => {
            if d.kind == KindArg::All {
                return Err(CliError::DeleteAll);
            }
            if d.kind == KindArg::Clusters {
                return Err(CliError::DeleteCluster);
            }
            match d.kind {
                KindArg::Tokens => return revoke_token(&global, d.name).await,
                KindArg::Users => return revoke_user(&global, d.name).await,
                KindArg::Freezes => return delete_freeze(&global, d.name).await,
                _ => {}
            }
            let deleted = connect().await?.delete(d.kind.api_kind(), &d.name).await?;
            if !deleted {
                return Err(not_found(d.kind, &d.name));
            }
            let report = output::DeleteReport {
                kind: d.kind.api_kind().to_owned(),
                name: d.name,
                deleted,
            };
            Ok(output::render(format, &report, || {
                output::delete_text(&report)
            }))
        }
        // Printed before its exit code is decided, so run_with runs it.
        Command::Diff(_) => unreachable!("run_with runs `gitfleet diff` itself"),
        Command::Status(s) => {
            let targets = connect()
                .await?
                .status(
                    s.app.as_deref().unwrap_or_default(),
                    s.cluster.as_deref().unwrap_or_default(),
                )
                .await?;
            let report = output::status_report(&targets);
            Ok(output::render(format, &report, || {
                output::status_table(&report, s.resources, style)
            }))
        }
        Command::Token(TokenCommand::Create(t)) | Command::Create(CreateCommand::Token(t)) => {
            let request = pb::CreateTokenRequest {
                ttl_seconds: t.ttl.as_secs().max(1),
                labels: t.labels.into_iter().collect(),
                max_uses: t.max_uses.unwrap_or(0),
                description: t.description.unwrap_or_default(),
                allowed_label_keys: t.allowed_label_keys,
                cluster_name: t.cluster.unwrap_or_default(),
            };
            let mut client = connect().await?;
            let response = client.create_token(request).await?;
            let report = output::token_report(&response);
            Ok(output::render(format, &report, || {
                output::token_text(&report, client.server(), style)
            }))
        }
        Command::Token(TokenCommand::List) => list_tokens(&global, None, style).await,
        Command::Token(TokenCommand::Revoke(t)) => revoke_token(&global, t.id).await,
        Command::Cluster(ClusterCommand::List(l)) => {
            let selector = l.selector.as_deref().map(parse_selector).transpose()?;
            let mut clusters = connect().await?.list_clusters().await?;
            // A revoked cluster is no ordinary disconnected one: it never comes back.
            clusters
                .retain(|c| (l.all || !c.revoked) && selects(selector.as_ref(), c.labels.iter()));
            let report = output::cluster_list_report(&clusters);
            Ok(output::render(format, &report, || {
                output::cluster_table(&report, style)
            }))
        }
        Command::Cluster(ClusterCommand::Pending) => {
            let clusters = connect().await?.list_pending_clusters().await?;
            let report = output::pending_list_report(&clusters);
            Ok(output::render(format, &report, || {
                output::pending_table(&report, style)
            }))
        }
        Command::Cluster(ClusterCommand::Approve(c)) => {
            if !connect().await?.approve_cluster(&c.name).await? {
                return Err(CliError::NotPending { name: c.name });
            }
            let report = output::ApproveReport {
                name: c.name,
                approved: true,
            };
            Ok(output::render(format, &report, || {
                output::approve_text(&report)
            }))
        }
        Command::Cluster(ClusterCommand::Revoke(c)) => {
            if !connect().await?.revoke_cluster(&c.name).await? {
                return Err(CliError::NoSuchCluster { name: c.name });
            }
            let report = output::RevokeClusterReport {
                name: c.name,
                revoked: true,
            };
            Ok(output::render(format, &report, || {
                output::revoke_cluster_text(&report)
            }))
        }
        Command::Cluster(ClusterCommand::Label(l))
        | Command::Label(args::LabelArgs { label: l, .. }) => {
            let mut changes = LabelChanges {
                overwrite: l.overwrite,
                ..Default::default()
            };
            for arg in &l.changes {
                parse_label_arg(arg, &mut changes).map_err(CliError::LabelChanges)?;
            }
            let cluster = connect().await?.label_cluster(&l.name, &changes).await?;
            let report = output::cluster_report(&cluster);
            Ok(output::render(format, &report, || {
                output::labeled_text(&report)
            }))
        }
        Command::Rollout(RolloutCommand::Status(r)) => {
            let status = connect().await?.rollout(&r.app).await?;
            let report = rollout::rollout_report(&status);
            Ok(output::render(format, &report, || {
                rollout::rollout_text(&report, style)
            }))
        }
        Command::Rollout(
            c @ (RolloutCommand::Pause(_) | RolloutCommand::Resume(_) | RolloutCommand::Promote(_)),
        ) => {
            let (verb, app, done) = match c {
                RolloutCommand::Pause(a) => (RolloutVerb::Pause, a.app, "paused"),
                RolloutCommand::Resume(a) => (RolloutVerb::Resume, a.app, "resumed"),
                RolloutCommand::Promote(a) => (RolloutVerb::Promote, a.app, "promoted"),
                _ => unreachable!("matched above"),
            };
            let status = connect().await?.rollout_command(verb, &app).await?;
            let report = rollout::rollout_report(&status);
            Ok(output::render(format, &report, || {
                format!(
                    "rollout #{} of {app} {done}\n\n{}",
                    report.number,
                    rollout::rollout_text(&report, style)
                )
            }))
        }
        Command::Rollout(RolloutCommand::Rollback(r)) => {
            let status = connect().await?.rollback(&r.app, r.to.as_deref()).await?;
            let report = rollout::rollout_report(&status);
            Ok(output::render(format, &report, || {
                format!(
                    "{} is rolling back to {}\n\n{}",
                    r.app,
                    output::short_revision(&report.revision),
                    rollout::rollout_text(&report, style)
                )
            }))
        }
        Command::Rollout(RolloutCommand::Start(r)) => {
            let status = connect().await?.override_freeze(&r.app, &r.reason).await?;
            let report = rollout::rollout_report(&status);
            Ok(output::render(format, &report, || {
                format!(
                    "rollout #{} of {} goes through freezes and sync windows: {}\n\n{}",
                    report.number,
                    r.app,
                    r.reason,
                    rollout::rollout_text(&report, style)
                )
            }))
        }
        Command::Freeze(FreezeCommand::Create(f)) | Command::Create(CreateCommand::Freeze(f)) => {
            let request = gitfleet_proto::v1::CreateFreezeRequest {
                name: f.name,
                apps: f.apps,
                projects: f.projects,
                cluster_selector: f.cluster_selector.unwrap_or_default(),
                until_unix: f.until.unwrap_or_default(),
                reason: f.reason,
                for_seconds: f.for_.map_or(0, |d| d.as_secs().max(1)),
                no_self_heal: f.no_self_heal,
            };
            let info = connect().await?.create_freeze(request).await?;
            let report = freeze::freeze_report(&info);
            Ok(output::render(format, &report, || {
                freeze::created_text(&report, style)
            }))
        }
        Command::Notifier(NotifierCommand::List) => {
            let list = connect().await?.list_notifiers().await?;
            let report = notifier::notifier_list_report(&list);
            Ok(output::render(format, &report, || {
                notifier::notifier_table(&report, style)
            }))
        }
        Command::Freeze(FreezeCommand::List) => list_freezes(&global, None, style).await,
        Command::Freeze(FreezeCommand::Delete(d)) => delete_freeze(&global, d.name).await,
        Command::Rollout(RolloutCommand::History(h)) => {
            let records = connect().await?.rollout_history(&h.app).await?;
            let report = rollout::history_report(&h.app, &records);
            Ok(output::render(format, &report, || {
                rollout::history_table(&report, style)
            }))
        }
        Command::App(c) => {
            let (verb, action, app, cluster) = match c {
                AppCommand::Suspend(a) => (AppVerb::Suspend, "suspend", a.app, None),
                AppCommand::Resume(a) => (AppVerb::Resume, "resume", a.app, None),
                AppCommand::Sync(s) => (AppVerb::Sync, "sync", s.app, s.cluster),
            };
            let message = connect()
                .await?
                .app_control(verb, &app, cluster.as_deref())
                .await?;
            let report = rollout::AppControlReport {
                app,
                action: action.to_owned(),
                message,
            };
            Ok(output::render(format, &report, || {
                format!("{}\n", report.message)
            }))
        }
        Command::Events(e) => {
            let events = connect()
                .await?
                .events(
                    e.app.as_deref().unwrap_or_default(),
                    e.cluster.as_deref().unwrap_or_default(),
                    0,
                    e.limit,
                )
                .await?;
            let report = rollout::events_report(&events);
            Ok(output::render(format, &report, || {
                rollout::events_table(&report, style, true)
            }))
        }
        Command::User(UserCommand::Create(u)) | Command::Create(CreateCommand::User(u)) => {
            let request = pb::CreateUserRequest {
                name: u.name.clone(),
                role: u.role.as_str().to_owned(),
                projects: u.projects,
                ttl_seconds: u.ttl.as_secs().max(1),
            };
            let mut client = connect().await?;
            let response = client.create_user(request).await?;
            let credentials = users::credentials(client.context(), &response);
            let Some(file) = u.file else {
                // The file itself is the output: `... > alice.gitfleetconfig`.
                return Ok(credentials.to_yaml());
            };
            crate::client::config::ConfigFile::save(&credentials, &file)?;
            let mut report =
                response
                    .user
                    .as_ref()
                    .map(users::user_report)
                    .ok_or(CliError::Client(ClientError::InvalidArgument {
                        message: "the hub answered without the user".into(),
                    }))?;
            let shown = file.display().to_string();
            report.credentials_file = Some(shown.clone());
            Ok(output::render(format, &report, || {
                users::created_text(&report, &shown)
            }))
        }
        Command::User(UserCommand::List) => list_users(&global, None, style).await,
        Command::User(UserCommand::Revoke(u)) => revoke_user(&global, u.name).await,
        Command::Repo(RepoCommand::Refresh(r)) => {
            let mut client = connect().await?;
            let fetched_at = |docs: &[pb::ResourceDocument]| {
                output::resource_values(docs)
                    .first()
                    .and_then(|v| v.pointer("/status/fetches").and_then(|t| t.as_u64()))
                    .unwrap_or(0)
            };
            let before = fetched_at(&client.get("Repo", &r.name).await?);
            client.refresh_repo(&r.name).await?;
            if !r.wait {
                return Ok(output::render(
                    format,
                    &serde_json::json!({"repo": r.name, "refresh": "requested"}),
                    || format!("repo/{}: fetch requested\n", r.name),
                ));
            }
            let deadline = tokio::time::Instant::now() + r.timeout;
            loop {
                let docs = client.get("Repo", &r.name).await?;
                if fetched_at(&docs) > before {
                    let repo = output::resource_values(&docs).remove(0);
                    let status = &repo["status"];
                    let error = status["error"].as_str().unwrap_or_default();
                    if !error.is_empty() {
                        return Err(CliError::RefreshFailed {
                            repo: r.name,
                            error: error.to_owned(),
                        });
                    }
                    let commit = status["commit"].as_str().unwrap_or_default();
                    let at = status["ref"].as_str().unwrap_or_default();
                    return Ok(output::render(format, &repo, || {
                        format!(
                            "repo/{} fetched: {at} at {}\n",
                            r.name,
                            commit.get(..8).unwrap_or(commit)
                        )
                    }));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(CliError::RefreshTimeout {
                        repo: r.name,
                        after: humantime::format_duration(r.timeout).to_string(),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
        Command::Version(v) => {
            let mut report = users::VersionReport {
                client_version: env!("CARGO_PKG_VERSION").to_owned(),
                hub_version: None,
                hub: None,
            };
            if !v.client {
                let mut client = connect().await?;
                let response = client.whoami().await?;
                report.hub = Some(client.server().to_owned());
                report.hub_version = Some(if response.hub_version.is_empty() {
                    "unknown (older than 0.1.0)".to_owned()
                } else {
                    response.hub_version
                });
            }
            Ok(output::render(format, &report, || {
                users::version_text(&report)
            }))
        }
        Command::Dashboard(d) => {
            let mut client = connect().await?;
            let response = client.dashboard_signin().await?;
            let report = users::dashboard_report(&response);
            let mut text =
                output::render(format, &report, || users::dashboard_text(&report, style));
            if !d.no_open {
                let note = open_in_browser(&report.url);
                // JSON and YAML stay one document: the note is for people reading a table.
                if matches!(format, args::OutputFormat::Table) {
                    text.push_str(&note);
                }
            }
            Ok(text)
        }
        Command::Whoami => {
            let mut client = connect().await?;
            let response = client.whoami().await?;
            let report = users::whoami_report(&response);
            Ok(output::render(format, &report, || {
                users::whoami_text(&report, client.server(), style)
            }))
        }
        Command::Audit(a) => {
            let since = a.since.map_or(0, |d| {
                now_unix().saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            });
            let entries = connect()
                .await?
                .audit(a.user.as_deref().unwrap_or_default(), since, a.limit)
                .await?;
            let report = users::audit_report(&entries);
            Ok(output::render(format, &report, || {
                users::audit_table(&report, style)
            }))
        }
        Command::Config(c) => {
            let path = config_path()?;
            match c {
                ConfigCommand::View(v) if v.ca => {
                    let config = config_cmd::load(&path)?;
                    let context = config_cmd::select(&config, global.context.as_deref(), &path)?;
                    let mut pem = context.certificate_authority_data.clone();
                    if !pem.ends_with('\n') {
                        pem.push('\n');
                    }
                    Ok(pem)
                }
                ConfigCommand::View(v) => {
                    let config = config_cmd::load(&path)?;
                    let config = if v.raw {
                        config
                    } else {
                        config_cmd::redact(config)
                    };
                    // A config is a document: YAML unless JSON is asked for.
                    Ok(match format {
                        OutputFormat::Json => output::to_json(&config),
                        OutputFormat::Table | OutputFormat::Yaml => output::to_yaml(&config),
                    })
                }
                ConfigCommand::GetContexts => {
                    let config = config_cmd::load(&path)?;
                    let rows = config_cmd::summaries(&config);
                    Ok(output::render(format, &rows, || {
                        config_cmd::contexts_table(&rows)
                    }))
                }
                ConfigCommand::UseContext(u) => {
                    config_cmd::use_context(&path, &u.name)?;
                    Ok(format!("switched to context {:?}\n", u.name))
                }
                ConfigCommand::Import(i) => {
                    let report = config_cmd::import(&path, &i.file, i.name.as_deref())?;
                    Ok(output::render(format, &report, || {
                        config_cmd::import_text(&report)
                    }))
                }
            }
        }
        Command::Completion(c) => {
            let mut buffer = Vec::new();
            clap_complete::generate(c.shell, &mut Cli::command(), "gitfleet", &mut buffer);
            Ok(String::from_utf8_lossy(&buffer).into_owned())
        }
    }
}

/// A `-l` selector in kubectl's syntax.
fn parse_selector(text: &str) -> Result<gitfleet_core::resources::LabelSelector, CliError> {
    gitfleet_core::fleet::freeze::parse_selector(text).map_err(|problem| CliError::Selector {
        selector: text.to_owned(),
        problem,
    })
}

/// `get tokens [ID]` and `token list`: bootstrap tokens, never their secrets.
async fn list_tokens(
    global: &args::GlobalArgs,
    id: Option<&str>,
    style: Style,
) -> Result<String, CliError> {
    let mut tokens = connect(global).await?.list_tokens().await?;
    if let Some(id) = id {
        tokens.retain(|t| t.token_id == id);
        if tokens.is_empty() {
            return Err(CliError::NoSuchToken { id: id.to_owned() });
        }
    }
    let report = output::token_list_report(&tokens);
    Ok(output::render(global.output, &report, || {
        output::token_table(&report, style)
    }))
}

/// `delete token ID` and `token revoke ID`.
async fn revoke_token(global: &args::GlobalArgs, id: String) -> Result<String, CliError> {
    if !connect(global).await?.revoke_token(&id).await? {
        return Err(CliError::NoSuchToken { id });
    }
    let report = output::RevokeTokenReport {
        token_id: id,
        revoked: true,
    };
    Ok(output::render(global.output, &report, || {
        output::revoke_token_text(&report)
    }))
}

/// `get users [NAME]` and `user list`.
async fn list_users(
    global: &args::GlobalArgs,
    name: Option<&str>,
    style: Style,
) -> Result<String, CliError> {
    let mut list = connect(global).await?.list_users().await?;
    if let Some(name) = name {
        list.retain(|u| u.name == name);
        if list.is_empty() {
            return Err(CliError::NoSuchUser {
                name: name.to_owned(),
            });
        }
    }
    let report = users::user_list_report(&list);
    Ok(output::render(global.output, &report, || {
        users::user_table(&report, style)
    }))
}

/// `delete user NAME` and `user revoke NAME`.
async fn revoke_user(global: &args::GlobalArgs, name: String) -> Result<String, CliError> {
    if !connect(global).await?.revoke_user(&name).await? {
        return Err(CliError::NoSuchUser { name });
    }
    let report = users::RevokeUserReport {
        name,
        revoked: true,
    };
    Ok(output::render(global.output, &report, || {
        format!(
            "user {} revoked: its certificate is refused from now on\n",
            report.name
        )
    }))
}

/// `get freezes [NAME]` and `freeze list`.
async fn list_freezes(
    global: &args::GlobalArgs,
    name: Option<&str>,
    style: Style,
) -> Result<String, CliError> {
    let mut list = connect(global).await?.list_freezes().await?;
    if let Some(name) = name {
        list.retain(|f| f.name == name);
        if list.is_empty() {
            return Err(CliError::NoSuchFreeze {
                name: name.to_owned(),
            });
        }
    }
    let report = freeze::freeze_list_report(&list);
    Ok(output::render(global.output, &report, || {
        freeze::freeze_table(&report, style)
    }))
}

/// `delete freeze NAME` and `freeze delete NAME`.
async fn delete_freeze(global: &args::GlobalArgs, name: String) -> Result<String, CliError> {
    if !connect(global).await?.delete_freeze(&name).await? {
        return Err(CliError::NoSuchFreeze { name });
    }
    let report = freeze::DeleteFreezeReport {
        name,
        deleted: true,
    };
    Ok(output::render(global.output, &report, || {
        format!(
            "freeze {} deleted: what it held rolls out now\n",
            report.name
        )
    }))
}

/// Whether `labels` match `selector` (no selector: everything).
fn selects<'a>(
    selector: Option<&gitfleet_core::resources::LabelSelector>,
    labels: impl Iterator<Item = (&'a String, impl AsRef<str>)>,
) -> bool {
    selector.is_none_or(|s| {
        let labels = labels
            .map(|(k, v)| (k.clone(), v.as_ref().to_owned()))
            .collect();
        gitfleet_core::fleet::placement::selector_matches(s, &labels)
    })
}

/// The newest `limit` events of an App and/or cluster, oldest first; none for `limit` 0.
async fn latest_events(
    client: &mut AdminClient,
    app: &str,
    cluster: &str,
    limit: u32,
) -> Result<Vec<pb::Event>, CliError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    Ok(client.events(app, cluster, 0, limit).await?)
}

/// How `gitfleet get` names a kind.
fn plural(kind: KindArg) -> &'static str {
    match kind {
        KindArg::Clusters => "clusters",
        KindArg::Repos => "repos",
        KindArg::Apps => "apps",
        KindArg::ClusterGroups => "clustergroups",
        KindArg::Projects => "projects",
        KindArg::HealthRules => "healthrules",
        KindArg::Notifiers => "notifiers",
        KindArg::Tokens => "tokens",
        KindArg::Users => "users",
        KindArg::Freezes => "freezes",
        KindArg::All => "all",
    }
}

fn not_found(kind: KindArg, name: &str) -> CliError {
    let plural = plural(kind);
    let kind = match kind {
        KindArg::All => "resource",
        k => k.api_kind(),
    };
    CliError::NotFound {
        kind: kind.to_owned(),
        name: name.to_owned(),
        plural: plural.to_owned(),
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;

/// Opens `url` with the desktop's opener; what to tell the user when it cannot (the link is
/// printed either way).
fn open_in_browser(url: &str) -> String {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    match std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => String::new(),
        Err(e) => format!("(could not run {opener}: {e}; open the link yourself)\n"),
    }
}
