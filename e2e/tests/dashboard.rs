//! The web dashboard in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `scripts/test` installs them). One fleet of four clusters
//! in three waves, real spokes on kubesim:
//!
//! - an operator signs in with `gitfleet dashboard --no-open`'s link (used once: a second use is
//!   refused) and sees the grid;
//! - a new commit reaches the open grid without a reload (a cell's revision changes live);
//! - the App page during a rollout shows its waves, Targets and timeline;
//! - the operator pauses the rollout through the confirmation, the page shows it paused, and
//!   the audit log has the operator's entry; a request without the session's CSRF token is
//!   refused;
//! - a viewer's page has no action, and a request the viewer forges is refused (and audited as
//!   denied).
//!
//! Screenshots go to `$GITFLEET_DASHBOARD_SCREENSHOTS` when set (docs/images for
//! docs/dashboard.md), else to the test's temporary directory. No sleeps: every wait is a
//! condition with a deadline.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use gitfleet_e2e::harness::{ClusterSpec, Fleet, FleetOptions, short, until_async};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = include_str!("../demo/hello/configmap.yaml");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn app_yaml(min_healthy_for: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: hello, labels: {{ team: web }} }}
spec:
  repo: platform
  path: apps/hello
  namespace: hello
  targets:
    - clusterSelector: {{}}
  rollout:
    minHealthyFor: {min_healthy_for}
    waves:
      - name: canary
        clusterSelector: {{ matchLabels: {{ ring: canary }} }}
      - name: eu
        clusterSelector: {{ matchLabels: {{ region: eu }} }}
"
    )
}

/// The browser binaries, or why the test cannot run: a failure under CI, a skip elsewhere.
fn browser_available() -> anyhow::Result<bool> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    let message = format!(
        "the dashboard's browser tests need {} (Debian packages chromium and chromium-driver; \
         scripts/test installs them)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    Ok(false)
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> anyhow::Result<Driver> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("running chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        until_async("chromedriver to listen", DEADLINE, async || {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()))
        })
        .await?;
        Ok(Driver { child, url })
    }

    async fn browser(&self) -> anyhow::Result<Client> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,860"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("opening a Chromium session over WebDriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn screenshots_dir(fleet: &Fleet) -> PathBuf {
    match std::env::var_os("GITFLEET_DASHBOARD_SCREENSHOTS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
            }
        }
        None => fleet.work_dir().join("screenshots"),
    }
}

async fn screenshot(browser: &Client, dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let png = browser.screenshot().await?;
    std::fs::write(dir.join(name), png)?;
    Ok(())
}

/// A user's sign-in link, as `gitfleet dashboard --no-open -o json` prints it for them.
async fn signin_link(config: &Path) -> anyhow::Result<String> {
    let config = config.display().to_string();
    let mut out = Vec::new();
    gitfleet_cli::cli::run_args(
        [
            "gitfleet",
            "--config",
            &config,
            "dashboard",
            "--no-open",
            "-o",
            "json",
        ],
        &mut out,
    )
    .await
    .context("gitfleet dashboard")?;
    let report: Value = serde_json::from_slice(&out)?;
    Ok(report["url"]
        .as_str()
        .context("the link in gitfleet dashboard's answer")?
        .to_owned())
}

/// Runs `script` in the page; its return value.
async fn js(browser: &Client, script: &str) -> anyhow::Result<Value> {
    Ok(browser.execute(script, vec![]).await?)
}

/// Waits until `script` returns something other than null, false or "".
async fn until_js(browser: &Client, what: &str, script: &str) -> anyhow::Result<Value> {
    until_async(what, DEADLINE, async || {
        let v = js(browser, script).await?;
        Ok(match &v {
            Value::Null | Value::Bool(false) => None,
            Value::String(s) if s.is_empty() => None,
            _ => Some(v),
        })
    })
    .await
}

/// Clicks what `css` finds, finding it again when the live page replaced it between the find
/// and the click (the page re-renders as the fleet changes: a stale element reference).
async fn click(browser: &Client, css: &str) -> anyhow::Result<()> {
    until_async(
        &format!("a click on {css}"),
        DEADLINE,
        async || match browser.find(Locator::Css(css)).await?.click().await {
            Ok(()) => Ok(Some(())),
            Err(e) if e.is_stale_element_reference() => Ok(None),
            Err(e) => Err(e.into()),
        },
    )
    .await
}

/// A POST from the page's own script, as a forged request would be made: its status.
async fn post_status(browser: &Client, path: &str, csrf: bool) -> anyhow::Result<u64> {
    let header = if csrf {
        "{'x-gitfleet-csrf': (document.cookie.match(/gitfleet_csrf=([^;]+)/) || [])[1] || ''}"
    } else {
        "{}"
    };
    let script = format!(
        "const done = arguments[0]; fetch('{path}', {{method: 'POST', headers: {header}}})\
         .then(r => done(r.status), e => done(String(e)));"
    );
    let v = browser.execute_async(&script, vec![]).await?;
    v.as_u64().with_context(|| format!("POST {path}: {v}"))
}

fn cell_script(cluster: &str, what: &str) -> String {
    format!(
        "const e = document.querySelector('#grid .cell[data-app=\"hello\"][data-cluster=\"{cluster}\"]'); return e ? e.{what} : null;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_live_and_acts_only_for_operators() -> anyhow::Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let mut fleet = Fleet::start(FleetOptions::new(vec![
        ClusterSpec::new("canary-1").label("ring", "canary"),
        ClusterSpec::new("eu-1").label("region", "eu"),
        ClusterSpec::new("eu-2").label("region", "eu"),
        ClusterSpec::new("us-1").label("region", "us"),
    ]))
    .await?;
    fleet.git.write("apps/hello/configmap.yaml", CONFIGMAP)?;
    let v1 = fleet.git.commit("hello v1")?;
    let yaml = format!("{}---\n{}", fleet.repo_yaml("platform"), app_yaml("0s"));
    fleet.apply_yaml(&yaml).await?;
    fleet.wait_converged("hello", &v1, 4, DEADLINE).await?;

    let work = fleet.work_dir().to_owned();
    let operator = work.join("olivia.gitfleetconfig");
    let viewer = work.join("victor.gitfleetconfig");
    fleet
        .cli(&[
            "user",
            "create",
            "olivia",
            "--role",
            "operator",
            "-f",
            &operator.display().to_string(),
        ])
        .await?;
    fleet
        .cli(&[
            "user",
            "create",
            "victor",
            "--role",
            "viewer",
            "-f",
            &viewer.display().to_string(),
        ])
        .await?;
    let shots = screenshots_dir(&fleet);
    let driver = Driver::start().await?;
    let browser = driver.browser().await?;
    let result = async {
        // The operator signs in: the link lands on the grid, every cell healthy at v1.
        let link = signin_link(&operator).await?;
        ensure!(link.contains("/ui/signin?token="), "{link}");
        browser.goto(&link).await?;
        let url = browser.current_url().await?;
        ensure!(!url.as_str().contains("token="), "the token left the address bar: {url}");
        until_js(
            &browser,
            "the grid's hello on canary-1 healthy",
            &cell_script("canary-1", "dataset.cell === 'h'"),
        )
        .await?;
        let who = browser.find(Locator::Id("who")).await?.text().await?;
        ensure!(who == "olivia (operator)", "{who}");
        let title = js(&browser, &cell_script("us-1", "title")).await?;
        ensure!(
            title.as_str().is_some_and(|t| t.contains(short(&v1))),
            "the revision on hover: {title}"
        );
        screenshot(&browser, &shots, "dashboard-grid.png").await?;

        // The link works once.
        let again = fleet_http_status(&link).await?;
        ensure!(again == 401, "a second use of the sign-in link answered {again}");

        // A new commit, rolled out in waves, reaches the open grid without a reload: the
        // canary's cell turns to v2 while the page's own state (a marker) survives.
        until_js(
            &browser,
            "the live stream",
            "return document.getElementById('live').dataset.state === 'on';",
        )
        .await?;
        js(&browser, "window.__sameDocument = true; return true;").await?;
        fleet
            .apply_yaml(&format!(
                "{}---\n{}",
                fleet.repo_yaml("platform"),
                app_yaml("1h")
            ))
            .await?;
        fleet.git.write(
            "apps/hello/configmap.yaml",
            CONFIGMAP.replace("gitfleet, v1", "gitfleet, v2"),
        )?;
        let v2 = fleet.git.commit("hello v2")?;
        fleet.cli(&["repo", "refresh", "platform"]).await?;
        until_js(
            &browser,
            "canary-1's cell at v2, live",
            &format!(
                "const e = document.querySelector('#grid .cell[data-app=\"hello\"][data-cluster=\"canary-1\"]'); \
                 return e && e.dataset.cell === 'h' && e.title.includes('{}');",
                short(&v2)
            ),
        )
        .await?;
        ensure!(
            js(&browser, "return window.__sameDocument === true;").await? == json!(true),
            "the page was reloaded"
        );
        let eu = js(&browser, &cell_script("eu-1", "title")).await?;
        ensure!(
            eu.as_str().is_some_and(|t| t.contains(short(&v1))),
            "eu-1 waits for the canary: {eu}"
        );

        // The App page during the rollout: its waves, Targets and events.
        click(&browser, "a.app-link").await?;
        until_js(
            &browser,
            "the App page's rollout",
            "const s = document.getElementById('rollout-summary'); return s && s.textContent === 'progressing';",
        )
        .await?;
        let waves = js(&browser, "return document.querySelectorAll('#waves .wave').length;").await?;
        ensure!(waves == json!(3), "three waves: {waves}");
        let targets = js(&browser, "return document.querySelectorAll('#targets tr[data-cluster]').length;").await?;
        ensure!(targets == json!(4), "four Targets: {targets}");
        until_js(
            &browser,
            "the timeline",
            "return document.querySelectorAll('#events li').length > 0;",
        )
        .await?;
        screenshot(&browser, &shots, "dashboard-app.png").await?;

        // Without the session's CSRF token an action is refused.
        let forged = post_status(&browser, "/ui/api/apps/hello/pause", false).await?;
        ensure!(forged == 403, "an action without the CSRF token answered {forged}");

        // The operator pauses it, through the confirmation; the page follows live.
        click(&browser, "button[data-action=pause]").await?;
        until_js(
            &browser,
            "the confirmation",
            "return !document.getElementById('confirm').hidden && document.getElementById('confirm-text').textContent;",
        )
        .await?;
        screenshot(&browser, &shots, "dashboard-confirm.png").await?;
        click(&browser, "#confirm-ok").await?;
        until_js(
            &browser,
            "the rollout paused on the page",
            "const s = document.getElementById('rollout-summary'); return s && s.textContent === 'paused';",
        )
        .await?;
        until_js(
            &browser,
            "the pause in the timeline",
            "return [...document.querySelectorAll('#events li')].some(l => l.textContent.includes('olivia'));",
        )
        .await?;
        let audit: Value = serde_json::from_str(&fleet.cli(&["audit", "-o", "json"]).await?)?;
        let entries = audit["entries"].as_array().context("audit entries")?;
        ensure!(
            entries.iter().any(|e| e["user"] == "olivia"
                && e["action"] == "rollout pause"
                && e["outcome"] == "ok"),
            "the operator's pause in the audit log: {audit}"
        );
        ensure!(
            entries
                .iter()
                .any(|e| e["user"] == "olivia" && e["action"] == "dashboard"),
            "the sign-in link in the audit log: {audit}"
        );

        // A viewer: the same page, no action; a forged action is refused and audited.
        browser.delete_all_cookies().await?;
        browser.goto(&signin_link(&viewer).await?).await?;
        until_js(
            &browser,
            "the viewer signed in",
            "return document.getElementById('who').textContent === 'victor (viewer)';",
        )
        .await?;
        let base = &link[..link.find("/signin").context("the link's path")?];
        browser.goto(&format!("{base}#/app/hello")).await?;
        until_js(
            &browser,
            "the viewer's App page",
            "const s = document.getElementById('rollout-summary'); return s && s.textContent === 'paused';",
        )
        .await?;
        let buttons = js(
            &browser,
            "return document.querySelectorAll('#actions, button[data-action]').length;",
        )
        .await?;
        ensure!(buttons == json!(0), "a viewer sees no action: {buttons}");
        screenshot(&browser, &shots, "dashboard-viewer.png").await?;
        let forged = post_status(&browser, "/ui/api/apps/hello/resume", true).await?;
        ensure!(forged == 403, "a viewer's forged resume answered {forged}");
        let audit: Value = serde_json::from_str(&fleet.cli(&["audit", "-o", "json"]).await?)?;
        ensure!(
            audit["entries"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e["user"] == "victor"
                    && e["action"] == "rollout resume"
                    && e["outcome"] == "denied")),
            "the viewer's refused resume in the audit log: {audit}"
        );
        let rollout: Value =
            serde_json::from_str(&fleet.cli(&["rollout", "status", "hello", "-o", "json"]).await?)?;
        ensure!(
            rollout.to_string().contains("aused"),
            "still paused: {rollout}"
        );
        Ok(())
    }
    .await;
    let _ = browser.close().await;
    drop(driver);
    fleet.shutdown().await;
    result
}

/// The status of a plain GET (the sign-in link used a second time).
async fn fleet_http_status(url: &str) -> anyhow::Result<u16> {
    let uri: hyper::Uri = url.parse()?;
    let host = uri
        .authority()
        .context("the link's host")?
        .as_str()
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&host).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    Ok(send.send_request(request).await?.status().as_u16())
}
