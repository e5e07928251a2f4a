//! `gitfleet-hub serve`: the hub process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};
use gitfleet_hub::allocator::{self, Allocator};
use gitfleet_hub::runtime::{self, HubConfig, StoreConfig};

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

#[derive(Parser)]
#[command(name = "gitfleet-hub", version, about = "gitfleet hub")]
struct Cli {
    /// How log lines are written: `text` for people, `json` (one object per line, with
    /// `trace_id`) for log pipelines.
    #[arg(
        long,
        global = true,
        env = "GITFLEET_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: gitfleet_hub::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(Box<Serve>),
    /// Create a new hub's PKI (DIR/pki: CA, server and admin certificates) and its first admin
    /// credential (DIR/admin.gitfleetconfig) without starting it; what every replica of a highly
    /// available hub mounts. Refuses when DIR/pki already holds a CA.
    Init {
        #[arg(long, env = "GITFLEET_DATA_DIR")]
        data_dir: PathBuf,
        /// Extra DNS name or IP for the server certificate (repeatable): every name spokes and
        /// admins dial, of every replica and of the Service in front of them.
        #[arg(
            long = "server-name",
            env = "GITFLEET_SERVER_NAMES",
            value_delimiter = ','
        )]
        server_names: Vec<String>,
        /// The gRPC URL written into the admin credential [default: https://127.0.0.1:7443].
        #[arg(long, env = "GITFLEET_ADVERTISE_URL")]
        advertise_url: Option<String>,
    },
    /// Write a backup of a stopped hub's store and CA as JSON.
    Export {
        #[arg(long, env = "GITFLEET_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// File to write (owner-only); standard output when absent.
        #[arg(long, short, env = "GITFLEET_BACKUP_FILE")]
        output: Option<PathBuf>,
    },
    /// Restore a backup into a new data directory (and, with --store etcd, a new etcd prefix).
    Import {
        #[arg(long, env = "GITFLEET_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, short, env = "GITFLEET_BACKUP_FILE")]
        input: PathBuf,
    },
}

/// Where the hub keeps its state.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// sled, embedded, in DATA_DIR/store: one hub process.
    Sled,
    /// etcd (--etcd-endpoints): the data directory keeps only the PKI, Git caches and the
    /// admin credential.
    Etcd,
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Where the hub keeps its state.
    #[arg(long, env = "GITFLEET_STORE", value_enum, default_value = "sled")]
    store: StoreKind,
    /// etcd client URLs (http://HOST:2379, or https:// with the --etcd-ca/--etcd-cert options),
    /// comma-separated or repeated.
    #[arg(
        long,
        env = "GITFLEET_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    etcd_endpoints: Vec<String>,
    /// Every key the hub writes to etcd starts with this; hubs with different prefixes share an
    /// etcd without seeing each other.
    #[arg(long, env = "GITFLEET_ETCD_PREFIX", default_value = gitfleet_hub::store::etcd::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// CA certificate (PEM) that signed etcd's server certificates; needed with https://
    /// endpoints.
    #[arg(long, env = "GITFLEET_ETCD_CA", value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) the hub presents to etcd (with --etcd-key).
    #[arg(
        long,
        env = "GITFLEET_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(
        long,
        env = "GITFLEET_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    etcd_key: Option<PathBuf>,
    /// How long the hub waits for etcd at startup before it gives up.
    #[arg(long, env = "GITFLEET_ETCD_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    etcd_connect_timeout: Duration,
    /// The time to live of the etcd leases the hub holds (its election candidacy, or its hold
    /// on the prefix): a replica killed without letting go is replaced within it, and one cut
    /// off from etcd for longer stops leading and writing. Whole seconds, at least 2s. The
    /// default keeps a failover under 10 s whenever the leader dies: it renews every third of
    /// the lease, so its successor waits out between two thirds of it and all of it.
    #[arg(long, env = "GITFLEET_ETCD_LEASE_TTL", default_value = "8s", value_parser = parse_lease_ttl)]
    etcd_lease_ttl: Duration,
    /// How often the leading replica compacts etcd's history (etcd keeps every version of
    /// every key until then), to the revision etcd was at one interval before; as
    /// kube-apiserver's --etcd-compaction-interval. 0s: never (etcd runs with
    /// --auto-compaction-retention, or its operator compacts).
    #[arg(long, env = "GITFLEET_ETCD_COMPACTION_INTERVAL", default_value = "5m", value_parser = parse_compaction_interval)]
    etcd_compaction_interval: Duration,
    /// Writes per etcd transaction, at most: etcd's --max-txn-ops (128 unless etcd was started
    /// with more).
    #[arg(long, env = "GITFLEET_ETCD_MAX_TXN_OPS", default_value_t = gitfleet_hub::store::etcd::DEFAULT_MAX_TXN_OPS, value_parser = clap::value_parser!(u32).range(1..).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))]
    etcd_max_txn_ops: usize,
    /// The largest request etcd takes, in bytes: etcd's --max-request-bytes (1.5 MiB unless
    /// etcd was started with more).
    #[arg(long, env = "GITFLEET_ETCD_MAX_REQUEST_BYTES", default_value_t = gitfleet_hub::store::etcd::DEFAULT_MAX_REQUEST_BYTES)]
    etcd_max_request_bytes: usize,
    /// Transactions the hub keeps under way at once when their writes allow any order (a
    /// commit's desired state, one transaction per 64 clusters): more hides more of etcd's
    /// round trip and disk sync behind each other.
    #[arg(long, env = "GITFLEET_ETCD_TXNS_IN_FLIGHT", default_value_t = gitfleet_hub::store::etcd::DEFAULT_TXNS_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))]
    etcd_txns_in_flight: usize,
}

impl StoreArgs {
    fn config(self) -> anyhow::Result<StoreConfig> {
        use gitfleet_hub::store::etcd::{EtcdOptions, EtcdTls};
        if self.store == StoreKind::Sled {
            anyhow::ensure!(
                self.etcd_endpoints.is_empty(),
                "--etcd-endpoints is set but --store is sled: add --store etcd"
            );
            return Ok(StoreConfig::Sled);
        }
        anyhow::ensure!(
            !self.etcd_endpoints.is_empty(),
            "--store etcd needs --etcd-endpoints"
        );
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        // The hub trusts no system roots: etcd's CA is always named.
        if let Some(tls) = self
            .etcd_endpoints
            .iter()
            .find(|e| e.starts_with("https://"))
            && self.etcd_ca.is_none()
        {
            anyhow::bail!("--etcd-ca is needed to check etcd's certificate at {tls}");
        }
        let tls = if self.etcd_ca.is_some() || self.etcd_cert.is_some() {
            if let Some(plain) = self
                .etcd_endpoints
                .iter()
                .find(|e| e.starts_with("http://"))
            {
                anyhow::bail!("--etcd-ca/--etcd-cert need https:// endpoints, not {plain}");
            }
            Some(EtcdTls {
                ca_pem: self.etcd_ca.as_ref().map(read).transpose()?,
                identity: match (&self.etcd_cert, &self.etcd_key) {
                    (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                    _ => None,
                },
            })
        } else {
            None
        };
        Ok(StoreConfig::Etcd(EtcdOptions {
            prefix: self.etcd_prefix,
            tls,
            connect_timeout: self.etcd_connect_timeout,
            max_txn_ops: self.etcd_max_txn_ops,
            max_request_bytes: self.etcd_max_request_bytes,
            txns_in_flight: self.etcd_txns_in_flight,
            hold_ttl: self.etcd_lease_ttl,
            compaction_interval: self.etcd_compaction_interval,
            ..EtcdOptions::new(self.etcd_endpoints)
        }))
    }
}

#[derive(clap::Args)]
struct Serve {
    /// Directory for the store (with --store sled), the PKI, Git caches and the admin
    /// credential.
    #[arg(long, env = "GITFLEET_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the gRPC listener (spokes and admins, mutual TLS).
    #[arg(long, env = "GITFLEET_GRPC_LISTEN", default_value = "0.0.0.0:7443")]
    grpc_listen: SocketAddr,
    /// Address of the HTTP listener: /healthz, /readyz, /metrics, /webhooks/{provider} and the
    /// web dashboard at /ui.
    #[arg(long, env = "GITFLEET_HTTP_LISTEN", default_value = "0.0.0.0:7080")]
    http_listen: SocketAddr,
    /// The web dashboard's public URL, which `gitfleet dashboard`'s sign-in links start with
    /// (e.g. https://fleet.example.com/ui, behind a TLS-terminating proxy); default
    /// http://HTTP-LISTEN-ADDRESS/ui.
    #[arg(long, env = "GITFLEET_UI_URL")]
    ui_url: Option<String>,
    /// How long a dashboard browser session lives after sign-in (never past the user's
    /// certificate).
    #[arg(long, env = "GITFLEET_UI_SESSION_TTL", default_value = "8h", value_parser = humantime::parse_duration)]
    ui_session_ttl: Duration,
    /// The gRPC URL clients should use (written into the admin credential).
    #[arg(long, env = "GITFLEET_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Extra DNS name or IP for the server certificate (repeatable).
    #[arg(
        long = "server-name",
        env = "GITFLEET_SERVER_NAMES",
        value_delimiter = ','
    )]
    server_names: Vec<String>,
    /// The gRPC URL the other replicas of this hub reach this one at, to hand it the calls only
    /// the leader answers [default: --advertise-url].
    #[arg(long, env = "GITFLEET_HUB_REPLICA_URL")]
    replica_url: Option<String>,
    /// Poll interval of Repos that set none [default: 30s, or 3m when webhooks are set up].
    #[arg(long, env = "GITFLEET_DEFAULT_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    default_poll_interval: Option<Duration>,
    /// YAML file of Git credentials (HTTPS user/password or SSH key + known_hosts) and webhook
    /// secrets, by entry name; Repos name entries in spec.credentialsRef / spec.webhookSecretRef.
    #[arg(long, env = "GITFLEET_REPO_CREDENTIALS")]
    repo_credentials: Option<PathBuf>,
    /// PEM bundle of certificate authorities trusted, besides the system's, by the HTTPS
    /// client of Helm chart repositories and OCI registries (a private repository behind a
    /// company CA). Spokes that download from there need the same bundle.
    #[arg(long, env = "GITFLEET_CHART_CA_FILE")]
    chart_ca_file: Option<PathBuf>,
    /// PEM bundle of certificate authorities trusted, besides the system's, by the HTTPS
    /// client of Notifiers' deliveries (a receiver behind a company CA).
    #[arg(long, env = "GITFLEET_NOTIFIER_CA_FILE")]
    notifier_ca_file: Option<PathBuf>,
    /// How long one notification request may take before it counts as failed (and is retried).
    #[arg(long, env = "GITFLEET_NOTIFICATION_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    notification_timeout: Duration,
    /// Attempts of one notification delivery before it is given up (retried with exponential
    /// backoff from 5s, capped at 15m, with jitter).
    #[arg(long, env = "GITFLEET_NOTIFICATION_MAX_ATTEMPTS", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=100))]
    notification_max_attempts: u32,
    /// Repo whose --fleet-path holds the hub's own Repos, Apps and ClusterGroups, applied on
    /// every new commit (the fleet managing itself).
    #[arg(long, env = "GITFLEET_FLEET_REPO", value_name = "NAME")]
    fleet_repo: Option<String>,
    /// Directory (or file) in the --fleet-repo with the fleet's resources.
    #[arg(
        long,
        env = "GITFLEET_FLEET_PATH",
        value_name = "PATH",
        default_value = ".",
        requires = "fleet_repo"
    )]
    fleet_path: String,
    /// Registrations wait until an admin approves them (`gitfleet cluster approve NAME`).
    #[arg(long, env = "GITFLEET_REQUIRE_APPROVAL")]
    require_approval: bool,
    /// Shared secret for push webhooks at /webhooks/{github,gitlab,gitea,forgejo,bitbucket}.
    #[arg(long, env = "GITFLEET_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// A cluster not heard from for this long shows as disconnected.
    #[arg(long, env = "GITFLEET_HEARTBEAT_GRACE", default_value = "90s", value_parser = humantime::parse_duration)]
    heartbeat_grace: Duration,
    /// Registrations a minute (and at once) one source address may make; beyond that the hub
    /// answers RESOURCE_EXHAUSTED and spokes retry later. 0: no limit.
    #[arg(long, env = "GITFLEET_REGISTER_RATE_LIMIT", value_name = "PER_MINUTE", default_value_t = gitfleet_hub::grpc::rate_limit::DEFAULT_REGISTER_PER_MINUTE)]
    register_rate_limit: u32,
    /// A connection to the gRPC listener that has not finished its TLS handshake after this
    /// long is closed.
    #[arg(long, env = "GITFLEET_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    tls_handshake_timeout: Duration,
    /// The largest webhook request body the hub reads, in bytes; larger deliveries get 413.
    #[arg(long, env = "GITFLEET_WEBHOOK_MAX_BODY_BYTES", default_value_t = gitfleet_hub::http::DEFAULT_WEBHOOK_MAX_BODY_BYTES)]
    webhook_max_body_bytes: usize,
    /// Connections each listener (gRPC, HTTP) keeps at once; beyond that a new connection is
    /// closed as soon as it is accepted. Count one per spoke, plus admins and webhooks.
    #[arg(long, env = "GITFLEET_MAX_CONNECTIONS", default_value_t = gitfleet_hub::listener::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// A connection with no byte read or written for this long is closed (a client that
    /// finishes its TLS handshake and then says nothing). The hub's HTTP/2 keepalive keeps
    /// quiet spokes well within it; it must exceed that keepalive's 40 s.
    #[arg(long, env = "GITFLEET_IDLE_CONNECTION_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    idle_connection_timeout: Duration,
    /// The audit log keeps at most this many entries (the oldest go first).
    #[arg(long, env = "GITFLEET_AUDIT_MAX_ENTRIES", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    audit_max_entries: u64,
    /// The audit log keeps no entry older than this.
    #[arg(long, env = "GITFLEET_AUDIT_MAX_AGE", default_value = "90d", value_parser = humantime::parse_duration)]
    audit_max_age: Duration,
    /// The Kubernetes-native API (docs/kube-api.md): reconcile the `gitfleet.dev/v1` custom
    /// resources (Repo, App, ClusterGroup, Project, Cluster) of the management cluster into the
    /// hub and write their status back. In-cluster configuration unless --kubeconfig.
    #[arg(long, env = "GITFLEET_KUBE_API")]
    kube_api: bool,
    /// Kubeconfig file (its current context) of the management cluster, for --kube-api.
    #[arg(
        long,
        env = "GITFLEET_KUBECONFIG",
        value_name = "FILE",
        requires = "kube_api"
    )]
    kubeconfig: Option<PathBuf>,
    /// The namespace whose custom resources the hub takes, for --kube-api [default: the
    /// pod's namespace in a cluster, else gitfleet].
    #[arg(
        long,
        env = "GITFLEET_KUBE_NAMESPACE",
        value_name = "NAMESPACE",
        requires = "kube_api"
    )]
    kube_namespace: Option<String>,
    /// The safety net of --kube-api: how often every custom resource is reconciled again (its
    /// status written only when it changed) and the Cluster objects compared with the hub's
    /// clusters; changes are followed as they happen besides.
    #[arg(long, env = "GITFLEET_KUBE_RESYNC", default_value = "30s", value_parser = humantime::parse_duration)]
    kube_resync: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = gitfleet_hub::telemetry::init(cli.log_format);
    allocator::return_freed_memory();
    runtime::install_crypto_provider();
    let args = match cli.command {
        Command::Serve(args) => *args,
        Command::Export {
            data_dir,
            store,
            output,
        } => {
            let store = store.config()?;
            let backup = runtime::export(&data_dir, &store)
                .await
                .with_context(|| format!("cannot export {}", data_dir.display()))?;
            let text = serde_json::to_string_pretty(&backup)?;
            match output {
                Some(path) => gitfleet_hub::pki::write_private(&path, text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{text}"),
            }
            return Ok(());
        }
        Command::Init {
            data_dir,
            server_names,
            advertise_url,
        } => {
            let url = advertise_url.unwrap_or_else(|| {
                runtime::default_grpc_url(SocketAddr::from(([0, 0, 0, 0], 7443)))
            });
            let made = runtime::init(&data_dir, &server_names, &url)
                .with_context(|| format!("cannot initialise {}", data_dir.display()))?;
            eprintln!(
                "created the hub's PKI in {} and the admin credential {}",
                made.pki_dir.display(),
                made.admin_config_path.display()
            );
            return Ok(());
        }
        Command::Import {
            data_dir,
            store,
            input,
        } => {
            let store = store.config()?;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let backup: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a gitfleet backup", input.display()))?;
            runtime::import(&data_dir, &store, &backup)
                .await
                .with_context(|| format!("cannot import into {}", data_dir.display()))?;
            eprintln!("restored into {}", data_dir.display());
            return Ok(());
        }
    };
    let store = args.store.config()?;
    if let Some(url) = &args.replica_url {
        check_replica_url(url).with_context(|| format!("--replica-url {url}"))?;
    }
    let credentials = match &args.repo_credentials {
        Some(path) => gitfleet_hub::credentials::load(path)?,
        None => Default::default(),
    };
    let connection_limits = gitfleet_hub::listener::Limits {
        max_connections: args.max_connections,
        idle_timeout: args.idle_connection_timeout,
    };
    connection_limits
        .check(
            runtime::HTTP2_KEEPALIVE_INTERVAL,
            runtime::HTTP2_KEEPALIVE_TIMEOUT,
        )
        .map_err(anyhow::Error::msg)
        .context("--max-connections / --idle-connection-timeout")?;
    let mut chart_fetch = gitfleet_support::fetch::FetchPolicy::default();
    if let Some(path) = &args.chart_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --chart-ca-file {}", path.display()))?;
        chart_fetch
            .trust_pem(&pem, &path.display().to_string())
            .map_err(anyhow::Error::msg)
            .context("--chart-ca-file")?;
    }
    let mut notify_fetch = gitfleet_support::fetch::FetchPolicy {
        timeout: args.notification_timeout,
        ..Default::default()
    };
    if let Some(path) = &args.notifier_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --notifier-ca-file {}", path.display()))?;
        notify_fetch
            .trust_pem(&pem, &path.display().to_string())
            .map_err(anyhow::Error::msg)
            .context("--notifier-ca-file")?;
    }
    let config = HubConfig {
        chart_fetch,
        notify_fetch,
        notify_retry: gitfleet_core::notify::RetryPolicy {
            max_attempts: args.notification_max_attempts,
            ..Default::default()
        },
        grpc_listen: args.grpc_listen,
        http_listen: Some(args.http_listen),
        advertise_url: args.advertise_url,
        server_names: args.server_names,
        replica_url: args.replica_url,
        ui_url: args.ui_url,
        ui_session_ttl: args.ui_session_ttl,
        // Webhooks bring changes at once; polling is then only the safety net.
        default_poll_interval: args.default_poll_interval.unwrap_or(
            if args.webhook_secret.is_some() || !credentials.webhook_secrets.is_empty() {
                Duration::from_secs(180)
            } else {
                Duration::from_secs(30)
            },
        ),
        webhook_secret: args.webhook_secret,
        require_approval: args.require_approval,
        repo_credentials: credentials,
        fleet: args
            .fleet_repo
            .map(|repo| gitfleet_hub::fleetsync::FleetSource {
                repo,
                path: args.fleet_path,
            }),
        heartbeat_grace: args.heartbeat_grace,
        register_rate_limit: args.register_rate_limit,
        tls_handshake_timeout: args.tls_handshake_timeout,
        webhook_max_body_bytes: args.webhook_max_body_bytes,
        connection_limits,
        audit_retention: gitfleet_core::users::AuditRetention {
            max_entries: usize::try_from(args.audit_max_entries).unwrap_or(usize::MAX),
            max_age: args.audit_max_age,
        },
        store,
        kube_api: args
            .kube_api
            .then_some(gitfleet_hub::kube_api::KubeApiConfig {
                kubeconfig: args.kubeconfig,
                namespace: args.kube_namespace,
                resync: args.kube_resync,
            }),
        ..HubConfig::new(args.data_dir)
    };
    let hub = runtime::start(config)
        .await
        .context("cannot start the hub")?;
    eprintln!(
        "gitfleet hub listening on {} (admin credential: {})",
        hub.grpc_url(),
        hub.admin_config_path().display()
    );
    let stopped = hub.shutdown_token();
    let by_itself = tokio::select! {
        () = shutdown_signal() => false,
        // A replica that lost its etcd lease stops itself (see docs/ha.md).
        () = stopped.cancelled() => true,
    };
    let failure = hub.engine().store_failure().map(str::to_owned);
    hub.shutdown().await;
    telemetry.shutdown();
    match failure {
        Some(why) if by_itself => anyhow::bail!("the hub stopped: {why}"),
        _ => Ok(()),
    }
}

/// etcd grants leases in whole seconds and none shorter than its own election allows: a
/// fraction would make the hub think it holds a lease etcd has already let run out.
fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if ttl.subsec_nanos() != 0 {
        return Err(format!(
            "{text} is not a whole number of seconds (etcd leases have whole seconds)"
        ));
    }
    if ttl < Duration::from_secs(2) {
        return Err(format!("{text} is shorter than etcd's shortest lease, 2s"));
    }
    Ok(ttl)
}

/// Zero turns compaction off; anything else is at least a second (a shorter interval keeps
/// less history than a watch that is merely busy may be behind).
fn parse_compaction_interval(text: &str) -> Result<Duration, String> {
    let every = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !every.is_zero() && every < Duration::from_secs(1) {
        return Err(format!(
            "{text} is shorter than 1s (0s turns compaction off)"
        ));
    }
    Ok(every)
}

/// The other replicas dial it with TLS: an `https://host:port` URL.
fn check_replica_url(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().context("not a URL")?;
    anyhow::ensure!(
        uri.scheme_str() == Some("https"),
        "must start with https:// (replicas speak mutual TLS to each other)"
    );
    anyhow::ensure!(
        uri.authority().is_some_and(|a| a.port_u16().is_some()),
        "must name a host and port, like https://hub-0.hub:7443"
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::{check_replica_url, parse_compaction_interval, parse_lease_ttl};
    use std::time::Duration;

    #[test]
    fn a_lease_ttl_is_whole_seconds_of_at_least_two() {
        assert_eq!(parse_lease_ttl("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_lease_ttl("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_lease_ttl("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(
            parse_lease_ttl("1s"),
            Err("1s is shorter than etcd's shortest lease, 2s".to_owned())
        );
        assert_eq!(
            parse_lease_ttl("2500ms"),
            Err(
                "2500ms is not a whole number of seconds (etcd leases have whole seconds)"
                    .to_owned()
            )
        );
        assert!(parse_lease_ttl("soon").is_err());
    }

    #[test]
    fn a_compaction_interval_is_off_or_at_least_a_second() {
        assert_eq!(
            parse_compaction_interval("5m"),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(parse_compaction_interval("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_compaction_interval("500ms"),
            Err("500ms is shorter than 1s (0s turns compaction off)".to_owned())
        );
    }

    #[test]
    fn a_replica_url_is_https_with_a_port() {
        assert!(check_replica_url("https://hub-0.hub:7443").is_ok());
        assert!(check_replica_url("https://10.0.0.7:7443").is_ok());
        for (url, problem) in [
            (
                "http://hub-0:7443",
                "must start with https:// (replicas speak mutual TLS to each other)",
            ),
            (
                "https://hub-0",
                "must name a host and port, like https://hub-0.hub:7443",
            ),
            ("not a url at all", "not a URL"),
        ] {
            let error = check_replica_url(url).unwrap_err();
            assert_eq!(error.to_string(), problem, "{url}");
        }
    }
}
