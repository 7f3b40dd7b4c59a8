//! End-to-end tests of the portal in a real headless Chromium, driven over
//! WebDriver (chromedriver) with fantoccini.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`
//! (`bash scripts/setup-browser.sh` installs them). One chromedriver serves
//! the whole test binary: the first test to need it starts it on a free port
//! and the last one to finish stops it, with every Chromium it launched.
//! Each browser session gets its own fresh profile directory.
//!
//! Screenshots of every page land in `target/screenshots/`. Every page
//! state a test reaches is checked with axe-core (WCAG 2.2 AA, from npm:
//! `npm ci` in scripts/setup-browser.sh) and for console errors:
//! `Browser::check_page`, which `Browser::screenshot` calls.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use common::net::free_port;
use common::{Backend, Email, TestApp, PASSWORD};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any wait may take: generous, for a loaded two-core machine.
const TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
const NEW_PASSWORD: &str = "N3w!Passphrase-2026";

// ----- chromedriver, one per test binary -----

/// A running chromedriver in its own process group (with every Chromium it
/// starts). Dropping it stops the whole group.
struct Driver {
    url: String,
    pgid: u32,
    child: Child,
    /// Held open for the wrapper shell: if this test process dies without
    /// running Drop, the pipe closes and the shell kills the group.
    lifeline: Option<ChildStdin>,
}

static DRIVER: Mutex<Weak<Driver>> = Mutex::new(Weak::new());

/// The binary's chromedriver, started if no test holds one.
fn driver() -> Arc<Driver> {
    let mut slot = DRIVER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(driver) = slot.upgrade() {
        return driver;
    }
    let driver = Arc::new(Driver::start());
    *slot = Arc::downgrade(&driver);
    driver
}

impl Driver {
    fn start() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: run `bash scripts/setup-browser.sh`"
            );
        }
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            // The shell is the group leader; it waits on its stdin (our
            // lifeline) and takes the whole group down when it closes.
            let mut child = Command::new("/bin/sh")
                .arg("-c")
                .arg(
                    r#""$0" --port="$1" --allowed-ips=127.0.0.1 </dev/null >/dev/null 2>&1 &
read -r _ || true
kill -KILL 0"#,
                )
                .arg(CHROMEDRIVER)
                .arg(port.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver");
            let pgid = child.id();
            let lifeline = child.stdin.take();
            let driver = Driver {
                url: format!("http://127.0.0.1:{port}"),
                pgid,
                child,
                lifeline,
            };
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                match driver_ready(port) {
                    Ok(true) => return driver,
                    Ok(false) => last_error = "not ready".into(),
                    Err(e) => last_error = e.to_string(),
                }
                std::thread::sleep(POLL);
            }
            drop(driver);
        }
        panic!("chromedriver did not become ready: {last_error}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Ask nicely (Chromium shuts down cleanly on SIGTERM), then insist.
        signal_group(self.pgid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let _ = self.child.try_wait();
            if !group_alive(self.pgid) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        // (A live member keeps the group id from being reused.)
        if group_alive(self.pgid) {
            signal_group(self.pgid, "KILL");
        }
        self.lifeline.take();
        let _ = self.child.wait();
    }
}

/// GET /status answered with `"ready": true`.
fn driver_ready(port: u16) -> std::io::Result<bool> {
    let answer = http_request(&format!("127.0.0.1:{port}"), "GET", "/status")?;
    Ok(answer.contains("\"ready\":true"))
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether any process of the group is still running (zombies excluded).
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parens.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

// ----- a browser session -----

struct Browser {
    client: Client,
    base: String,
    /// The WebDriver session, ended in Drop when a failing test never got
    /// to `close` (so its Chromium quits now, not when chromedriver does).
    session: Option<(String, String)>,
    // Dropped after `Drop::drop` has ended the session, in this order: the
    // profile goes once Chromium has quit, then (if last) the driver.
    _profile: tempfile::TempDir,
    _driver: Arc<Driver>,
}

impl Browser {
    async fn open(app: &TestApp) -> Self {
        Self::open_with(app, None).await
    }

    /// One that takes the test's self-signed certificate (the W3C
    /// `acceptInsecureCerts` capability): for the https front in
    /// [`the_example_spa_on_another_site`].
    async fn open_trusting_test_certificates(app: &TestApp) -> Self {
        Self::open_configured(app, None, true).await
    }

    /// A phone: chromedriver's mobile emulation with touch on, so
    /// `(pointer: coarse)` matches as on a real touch screen.
    async fn open_touch(app: &TestApp) -> Self {
        let phone = json!({
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 3.0, "touch": true},
        });
        Self::open_with(app, Some(phone)).await
    }

    async fn open_with(app: &TestApp, mobile_emulation: Option<Value>) -> Self {
        Self::open_configured(app, mobile_emulation, false).await
    }

    async fn open_configured(
        app: &TestApp,
        mobile_emulation: Option<Value>,
        accept_insecure_certs: bool,
    ) -> Self {
        let driver = driver();
        let profile = tempfile::Builder::new()
            .prefix("clinic-auth-chromium-")
            .tempdir()
            .unwrap();
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--password-store=basic".to_owned(),
            "--lang=en-GB".to_owned(),
            format!("--window-size={WIDTH},{HEIGHT}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut chrome_options = json!({"binary": CHROMIUM, "args": args});
        if let Some(emulation) = mobile_emulation {
            chrome_options["mobileEmulation"] = emulation;
        }
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": chrome_options,
            // Kept so every page state can be checked for console errors.
            "goog:loggingPrefs": {"browser": "ALL"},
            "acceptInsecureCerts": accept_insecure_certs,
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let mut last_error = String::new();
        for _ in 0..3 {
            let connected = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&driver.url)
                .await;
            match connected {
                Ok(client) => {
                    let session = client.session_id().await.ok().flatten();
                    let host = driver.url.trim_start_matches("http://").to_owned();
                    return Browser {
                        client,
                        base: app.base.clone(),
                        session: session.map(|id| (host, id)),
                        _profile: profile,
                        _driver: driver,
                    };
                }
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("could not start a Chromium session: {last_error}");
    }

    /// Ends the WebDriver session, so Chromium exits cleanly.
    async fn close(mut self) {
        if self.client.clone().close().await.is_ok() {
            self.session = None;
        }
    }

    async fn goto(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        self.client.goto(&url).await.expect("navigate");
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        url.path().to_owned()
    }

    async fn url(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        url.to_string()
    }

    async fn query(&self) -> Option<String> {
        let url = self.client.current_url().await.expect("current url");
        url.query().map(str::to_owned)
    }

    /// Waits until the page's path is `path` (the query is not compared).
    async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let now = self.path().await;
            if now == path {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected to be on {path}, still on {now} after {TIMEOUT:?}; page:\n{}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for `path`, or for the "form has expired" page: true on `path`.
    async fn wait_path_or_expired(&self, path: &str) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.path().await == path {
                return true;
            }
            if let Ok(h1) = self.client.find(Locator::Css("h1")).await {
                if h1
                    .text()
                    .await
                    .is_ok_and(|t| t.contains("This form has expired"))
                {
                    return false;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "expected to reach {path}; on {} after {TIMEOUT:?}; page:\n{}",
                    self.url().await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return element;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element {css} on {} after {TIMEOUT:?}; page:\n{}",
                    self.url().await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the element `css` shows `text` (contained in its text).
    async fn wait_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if element.text().await.is_ok_and(|t| t.contains(text)) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{css} never showed {text:?} on {} after {TIMEOUT:?}; page:\n{}",
                    self.url().await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.expect("element text")
    }

    async fn value(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.expect("clear field");
        field.send_keys(text).await.expect("type into field");
    }

    async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.expect("click");
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The HTTP status of the current document (Navigation Timing Level 2).
    async fn status(&self) -> u64 {
        self.client
            .execute(
                "return performance.getEntriesByType('navigation')[0].responseStatus;",
                vec![],
            )
            .await
            .expect("navigation entry")
            .as_u64()
            .expect("responseStatus is a number")
    }

    /// At phone width, the page fits the viewport (no sideways scrolling).
    async fn assert_no_horizontal_scroll(&self) {
        let widths = self
            .client
            .execute(
                "return [window.innerWidth, document.documentElement.scrollWidth];",
                vec![],
            )
            .await
            .expect("page widths");
        let (inner, scroll) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(inner <= 400, "viewport is phone-sized: {inner}");
        assert!(scroll <= inner, "no horizontal scroll: {scroll} > {inner}");
    }

    /// What every page state the tests reach must pass: no WCAG 2.2 AA
    /// violation that axe-core finds, and nothing logged as an error in the
    /// browser's console since the previous check (a missing favicon, a
    /// CSP refusal, a script error). Future page tests call this (or
    /// `screenshot`, which calls it) after each navigation or submit.
    async fn check_page(&self, state: &str) {
        self.assert_accessible(state).await;
        self.assert_console_clean(state).await;
    }

    /// Injects axe-core over WebDriver and fails with every violation of
    /// the WCAG 2.0/2.1/2.2 A and AA rules (rule, impact, target nodes).
    ///
    /// The pages' CSP (`script-src 'self'` at most) does not stop this:
    /// WebDriver runs the script through the DevTools protocol, outside
    /// the page's policy, and axe-core itself needs no eval.
    async fn assert_accessible(&self, state: &str) {
        let loaded = self
            .client
            .execute(
                &format!("{}\nreturn typeof window.axe;", axe_source()),
                vec![],
            )
            .await
            .expect("inject axe-core");
        assert_eq!(loaded, json!("object"), "axe-core did not load on {state}");
        let answer = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
window.axe
  .run(document, {
    runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']},
    resultTypes: ['violations'],
  })
  .then(
    (r) => done({violations: r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      targets: v.nodes.map((n) => n.target.join(' ')),
    }))}),
    (e) => done({error: String(e)}),
  );"#,
                vec![],
            )
            .await
            .expect("run axe-core");
        assert!(
            answer["error"].is_null(),
            "axe-core failed on {state}: {}",
            answer["error"]
        );
        let violations = answer["violations"].as_array().expect("violations");
        let report: Vec<String> = violations
            .iter()
            .map(|v| {
                format!(
                    "{} ({}): {} at {}",
                    v["id"].as_str().unwrap_or_default(),
                    v["impact"].as_str().unwrap_or("?"),
                    v["help"].as_str().unwrap_or_default(),
                    v["targets"]
                )
            })
            .collect();
        assert!(
            report.is_empty(),
            "axe-core: {} WCAG 2.2 AA violation(s) on {state} ({}):\n{}",
            report.len(),
            self.url().await,
            report.join("\n")
        );
    }

    /// Fails on any console entry at error level (SEVERE) since the last
    /// read (chromedriver hands each entry out once). The one expected
    /// error is the page's own status when the test meant to reach an
    /// error page (401, 403, 404): Chromium logs that as a failed load.
    async fn assert_console_clean(&self, state: &str) {
        let entries = self
            .client
            .issue_cmd(ExtensionCommand {
                path: "se/log",
                body: json!({"type": "browser"}),
            })
            .await
            .expect("read the browser console");
        let document = self.url().await;
        let status = self.status().await;
        let errors: Vec<String> = entries
            .as_array()
            .expect("log entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .filter_map(|e| e["message"].as_str())
            .filter(|m| {
                !(status >= 400
                    && m.starts_with(&format!("{document} - "))
                    && m.contains(&format!("status of {status}")))
            })
            .map(str::to_owned)
            .collect();
        assert!(
            errors.is_empty(),
            "console errors on {state} ({document}):\n{}",
            errors.join("\n")
        );
    }

    /// Resizes the window so the page's viewport is `width` CSS pixels
    /// wide (headless Chromium has no window frame), checked.
    async fn set_viewport_width(&self, width: u32) {
        self.client
            .set_window_size(width, 844)
            .await
            .expect("resize");
        let inner = self
            .client
            .execute("return window.innerWidth;", vec![])
            .await
            .expect("innerWidth");
        assert_eq!(inner.as_u64(), Some(u64::from(width)), "viewport width");
    }

    /// Focuses `css` and measures its focus indicator: the outline's colour
    /// against the first opaque background behind it (the outline is drawn
    /// outside the element, on its parent's background). Returns the
    /// contrast ratio (WCAG relative luminance), with a description.
    async fn focus_contrast(&self, css: &str) -> (f64, String) {
        let answer = self
            .client
            .execute(
                r#"const el = document.querySelector(arguments[0]);
el.focus();
const style = getComputedStyle(el);
const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
let bg = null;
for (let n = el.parentElement; n && !bg; n = n.parentElement) {
  const c = rgb(getComputedStyle(n).backgroundColor);
  if (c.length === 3 || (c.length === 4 && c[3] === 1)) bg = c.slice(0, 3);
}
bg = bg || [255, 255, 255];
const lum = (c) => {
  const [r, g, b] = c.slice(0, 3).map((v) => {
    v /= 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ring = rgb(style.outlineColor);
const [hi, lo] = [lum(ring), lum(bg)].sort((a, b) => b - a);
return {
  active: document.activeElement === el,
  visible: el.matches(':focus-visible'),
  style: style.outlineStyle,
  width: parseFloat(style.outlineWidth),
  ring: style.outlineColor,
  background: 'rgb(' + bg.join(', ') + ')',
  ratio: (hi + 0.05) / (lo + 0.05),
};"#,
                vec![json!(css)],
            )
            .await
            .expect("measure the focus indicator");
        let what = format!("{css}: {answer}");
        assert_eq!(answer["active"], json!(true), "{what}");
        assert_eq!(answer["visible"], json!(true), "{what}");
        assert_eq!(answer["style"], json!("solid"), "{what}");
        assert!(answer["width"].as_f64().unwrap_or(0.0) >= 2.0, "{what}");
        (answer["ratio"].as_f64().expect("ratio"), what)
    }

    async fn sign_in(&self, email: &str, password: &str) {
        self.goto("/login").await;
        self.wait_path("/login").await;
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
    }

    /// Saves a PNG of the whole page (the window grows to the page's height
    /// for the shot) as target/screenshots/{name}.png, after the page
    /// state passed `check_page` (every shot is a state worth checking).
    async fn screenshot(&self, name: &str) {
        self.check_page(name).await;
        let dims = self
            .client
            .execute(
                "return [window.innerWidth, window.innerHeight, \
                 Math.ceil(document.documentElement.scrollHeight)];",
                vec![],
            )
            .await
            .expect("page size");
        let dim = |i: usize| dims[i].as_u64().unwrap_or(0) as u32;
        let (inner_w, inner_h, page_h) = (dim(0), dim(1), dim(2));
        let (outer_w, outer_h) = self.client.get_window_size().await.expect("window size");
        let (outer_w, outer_h) = (outer_w as u32, outer_h as u32);
        let grow = page_h > inner_h;
        if grow {
            let chrome = outer_h.saturating_sub(inner_h);
            self.client
                .set_window_size(outer_w, (page_h + chrome).min(4000))
                .await
                .expect("resize for the shot");
        }
        let png = self.client.screenshot().await.expect("screenshot");
        if grow {
            self.client
                .set_window_size(outer_w, outer_h)
                .await
                .expect("restore the window");
        }
        assert!(inner_w > 0, "page has a width");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some((host, id)) = self.session.take() {
            // A test panicked before `close`: end the session over a plain
            // blocking request (no runtime to await on here).
            let _ = http_request(&host, "DELETE", &format!("/session/{id}"));
        }
    }
}

/// A minimal HTTP/1.1 request to chromedriver; returns what was read of
/// the answer once the JSON body is complete (or the server closed).
fn http_request(host: &str, method: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            });
            if length.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// axe-core's script, from the npm package pinned in package-lock.json
/// (`npm ci`, run by scripts/setup-browser.sh), read once per test binary.
fn axe_source() -> &'static str {
    static AXE: OnceLock<String> = OnceLock::new();
    AXE.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/axe-core/axe.min.js");
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `bash scripts/setup-browser.sh` (npm ci) to install axe-core",
                path.display()
            )
        })
    })
}

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// The emails in the outbox whose subject starts with `subject`, waiting
/// (generously) for `count` of them.
async fn emails(app: &TestApp, subject: &str, count: usize) -> Vec<Email> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let emails = common::read_subject(&app.outbox(), subject);
        if emails.len() >= count {
            return emails;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} emails in {}",
            app.outbox().display()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn sqlite_app() -> TestApp {
    TestApp::spawn(Backend::Sqlite).await
}

// ----- scenarios -----

/// Register (after fixing the form's errors), land on the account page,
/// sign out from the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_sign_out() {
    let app = sqlite_app().await;
    let b = Browser::open(&app).await;

    b.goto("/").await;
    b.wait_path("/login").await;
    b.click("a[href='/register']").await;
    b.wait_path("/register").await;
    assert_eq!(b.text("h1").await, "Create an account");
    b.screenshot("register").await;

    // First attempt: a guessable password, and a confirmation that differs.
    b.fill("#name", "Dr Ada Lovelace").await;
    b.fill("#email", "ada@example.com").await;
    b.fill("#password", "password1234").await;
    b.fill("#password_confirm", "password12345").await;
    b.click("form[action='/register'] button[type=submit]")
        .await;
    b.wait_for(".error-summary").await;
    assert_eq!(b.path().await, "/register");
    let summary = b.text(".error-summary").await;
    assert!(summary.contains("The passwords do not match."), "{summary}");
    assert!(b.count("#password[aria-invalid=true]").await == 1);
    // What was typed stays, except the passwords.
    assert_eq!(b.value("#name").await, "Dr Ada Lovelace");
    assert_eq!(b.value("#email").await, "ada@example.com");
    assert_eq!(b.value("#password").await, "");
    b.screenshot("register-errors").await;

    b.fill("#password", PASSWORD).await;
    b.fill("#password_confirm", PASSWORD).await;
    b.click("form[action='/register'] button[type=submit]")
        .await;
    b.wait_path("/account").await;
    assert_eq!(b.text("h1").await, "Your account");
    let profile = b.text(".facts").await;
    assert!(profile.contains("Dr Ada Lovelace"), "{profile}");
    assert!(profile.contains("ada@example.com"), "{profile}");
    assert!(b.text(".who").await.contains("Dr Ada Lovelace"));
    assert_eq!(b.count("table.sessions tbody tr.current").await, 1);
    b.screenshot("account").await;

    b.click("header form[action='/logout'] button").await;
    b.wait_path("/login").await;
    b.wait_text(".notice", "You are signed out.").await;
    b.check_page("login-signed-out").await;
    // Signed out for real: the account page sends us back.
    b.goto("/account").await;
    b.wait_path("/login").await;

    b.close().await;
}

/// A wrong password re-renders the form with the error and the email kept;
/// the right one signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_then_right_one() {
    let app = sqlite_app().await;
    app.register("grace@example.com").await;
    let b = Browser::open(&app).await;

    b.goto("/login").await;
    b.wait_path("/login").await;
    assert_eq!(b.text("h1").await, "Sign in");
    b.screenshot("login").await;

    b.sign_in("grace@example.com", "Not!TheRightOne-42").await;
    b.wait_text(".error-summary", "The email or password is not correct.")
        .await;
    assert_eq!(b.path().await, "/login");
    assert_eq!(b.status().await, 401);
    assert_eq!(b.value("#email").await, "grace@example.com");
    assert_eq!(b.value("#password").await, "");
    assert_eq!(b.count("#email[aria-invalid=true]").await, 1);
    // Either field could be wrong: both are marked, with the one message.
    assert_eq!(
        b.count("#password[aria-invalid=true][aria-describedby=email-error]")
            .await,
        1
    );
    let title = b.client.title().await.expect("title");
    assert!(title.starts_with("Error: Sign in"), "{title}");
    b.screenshot("login-error").await;

    // The kept email is used as is: only the password is typed again.
    b.fill("#password", PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_path("/account").await;
    assert!(b.text(".facts").await.contains("grace@example.com"));

    b.close().await;
}

/// Forgot password -> email -> link -> new password -> sign in with it; the
/// old password and the used link no longer work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_by_email() {
    let app = sqlite_app().await;
    app.register("mary@example.com").await;
    let b = Browser::open(&app).await;

    b.goto("/login").await;
    b.click("a[href='/forgot-password']").await;
    b.wait_path("/forgot-password").await;
    assert_eq!(b.text("h1").await, "Reset your password");
    b.screenshot("forgot").await;

    b.fill("#email", "mary@example.com").await;
    b.click("form[action='/forgot-password'] button[type=submit]")
        .await;
    b.wait_text("h1", "Check your email").await;
    assert_eq!(b.path().await, "/forgot-password");
    assert_eq!(b.query().await.as_deref(), Some("sent=1"));
    b.screenshot("forgot-sent").await;

    let mail = emails(&app, "Reset your", 1).await.remove(0);
    assert!(mail.to.contains("mary@example.com"), "{}", mail.to);
    let token = mail.reset_token();
    let link = format!("{}/reset-password?token={token}", app.base);

    b.goto(&link).await;
    b.wait_text("h1", "Choose a new password").await;
    // The account, for the password manager that saves the new password.
    assert_eq!(b.value("#username").await, "mary@example.com");
    b.screenshot("reset").await;

    // A confirmation that differs is refused and the link stays usable.
    b.fill("#password", NEW_PASSWORD).await;
    b.fill("#password_confirm", "Something!Else-2026").await;
    b.click("form[action='/reset-password'] button[type=submit]")
        .await;
    b.wait_text(".error-summary", "The passwords do not match.")
        .await;
    b.screenshot("reset-errors").await;

    b.fill("#password", NEW_PASSWORD).await;
    b.fill("#password_confirm", NEW_PASSWORD).await;
    b.click("form[action='/reset-password'] button[type=submit]")
        .await;
    b.wait_path("/login").await;
    b.wait_text(".notice", "Your password has been changed")
        .await;
    // The page that held the token passed on at most our origin as Referer.
    let referrer = b
        .client
        .execute("return document.referrer;", vec![])
        .await
        .expect("document.referrer");
    let referrer = referrer.as_str().unwrap_or_default();
    assert!(!referrer.contains(&token), "token leaked: {referrer}");
    assert!(!referrer.contains("reset-password"), "{referrer}");
    b.screenshot("login-after-reset").await;

    // The link works once.
    b.goto(&link).await;
    b.wait_text("h1", "This link does not work").await;
    assert_eq!(b.status().await, 400);
    b.check_page("reset-used-link").await;
    b.goto("/reset-password?token=not-a-real-token").await;
    b.wait_text("h1", "This link does not work").await;
    b.screenshot("reset-invalid").await;

    b.sign_in("mary@example.com", PASSWORD).await;
    b.wait_text(".error-summary", "The email or password is not correct.")
        .await;
    assert_eq!(b.path().await, "/login");

    b.sign_in("mary@example.com", NEW_PASSWORD).await;
    b.wait_path("/account").await;
    assert!(b.text(".facts").await.contains("mary@example.com"));

    b.close().await;
}

/// Two browsers signed in as the same user; the first signs the second out
/// from the sessions table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_another_browser() {
    let app = sqlite_app().await;
    app.register("jane@example.com").await;
    let first = Browser::open(&app).await;
    let second = Browser::open(&app).await;

    first.sign_in("jane@example.com", PASSWORD).await;
    first.wait_path("/account").await;
    second.sign_in("jane@example.com", PASSWORD).await;
    second.wait_path("/account").await;

    first.client.refresh().await.expect("reload");
    first.wait_path("/account").await;
    first.wait_for("table.sessions").await;
    assert_eq!(first.count("table.sessions tbody tr").await, 2);
    assert_eq!(first.count("table.sessions tbody tr.current").await, 1);
    // The current row has no button of its own; the other one does.
    assert_eq!(
        first
            .count("table.sessions tbody tr.current form[action='/account/sessions/end']")
            .await,
        0
    );
    let this_browser = first.text("table.sessions tbody tr.current").await;
    assert!(this_browser.contains("This browser"), "{this_browser}");
    first.screenshot("account-two-sessions").await;
    // The sessions table reflows into cards on a phone.
    first
        .client
        .set_window_size(390, 844)
        .await
        .expect("resize");
    first.assert_no_horizontal_scroll().await;
    first.screenshot("account-phone").await;
    first
        .client
        .set_window_size(WIDTH, HEIGHT)
        .await
        .expect("resize");

    first
        .click("table.sessions tbody tr:not(.current) form[action='/account/sessions/end'] button")
        .await;
    first
        .wait_text(".notice", "That session has been signed out.")
        .await;
    first.check_page("account-session-ended").await;
    first.wait_path("/account").await;
    assert_eq!(first.count("table.sessions tbody tr").await, 1);

    // The second browser is signed out; the first is not.
    second.goto("/account").await;
    second.wait_path("/login").await;
    first.goto("/account").await;
    first.wait_path("/account").await;

    second.close().await;
    first.close().await;
}

/// A POST without the CSRF token gets the 403 page, in the browser and over
/// plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_without_csrf_is_refused() {
    let app = sqlite_app().await;
    app.register("csrf@example.com").await;
    let b = Browser::open(&app).await;

    b.goto("/login").await;
    b.wait_path("/login").await;
    b.fill("#email", "csrf@example.com").await;
    b.fill("#password", PASSWORD).await;
    b.client
        .execute(
            "document.querySelector(\"form[action='/login'] input[name=csrf]\").remove();",
            vec![],
        )
        .await
        .expect("remove the csrf input");
    assert_eq!(b.count("form[action='/login'] input[name=csrf]").await, 0);
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text("h1", "This form has expired").await;
    assert_eq!(b.status().await, 403);
    b.screenshot("error-403").await;
    // Not signed in.
    b.goto("/account").await;
    b.wait_path("/login").await;

    // Unknown pages get the friendly 404 page.
    b.goto("/nope").await;
    b.wait_text("h1", "Page not found").await;
    assert_eq!(b.status().await, 404);
    b.screenshot("error-404").await;

    b.close().await;

    let res = app
        .client
        .post(app.url("/login"))
        .header("accept", "text/html")
        .form(&[("email", "csrf@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res
        .headers()
        .get("set-cookie")
        .is_none_or(|c| !c.to_str().unwrap_or_default().starts_with("refresh_token=")));
    let body = res.text().await.unwrap();
    assert!(body.contains("This form has expired"), "{body}");
}

/// The session ends after SESSION_IDLE_TIMEOUT without a request: in the
/// browser, and on the server for anyone replaying the old cookie.
///
/// The app's clock is moved past the timeout rather than waited out, so the
/// timeout can be long enough (a minute) that signing in, which itself
/// must finish within one idle period, is reliable on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_times_out() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("SESSION_IDLE_TIMEOUT", "1m"),
            ("SESSION_MAX_LIFETIME", "1h"),
        ],
    )
    .await;
    app.register("idle@example.com").await;
    let b = Browser::open(&app).await;

    // The sign-in form's own session idles out too if the form sits longer
    // than the timeout (then its POST is refused as expired): fill it in one
    // script call, and try again should a stalled machine still miss it.
    let mut signed_in = false;
    for _ in 0..3 {
        b.goto("/login").await;
        b.wait_path("/login").await;
        b.wait_for("#password").await;
        b.client
            .execute(
                "document.getElementById('email').value = arguments[0];\
                 document.getElementById('password').value = arguments[1];\
                 document.querySelector('form[action=\"/login\"] button[type=submit]').click();",
                vec![json!("idle@example.com"), json!(PASSWORD)],
            )
            .await
            .expect("submit the sign-in form");
        signed_in = b.wait_path_or_expired("/account").await;
        if signed_in {
            break;
        }
    }
    assert!(signed_in, "could not sign in within the idle timeout");
    let cookie = b
        .client
        .get_named_cookie("session")
        .await
        .expect("session cookie");
    let cookie = format!("session={}", cookie.value());
    let account = |cookie: String| {
        app.client
            .get(app.url("/account"))
            .header("cookie", cookie)
            .send()
    };
    // The cookie is live on the server now...
    assert_eq!(account(cookie.clone()).await.unwrap().status(), 200);

    app.clock.advance(Duration::from_secs(61));

    // ...and dead after the idle timeout, in the browser and on the server.
    b.goto("/account").await;
    b.wait_path("/login").await;
    b.screenshot("login-after-idle").await;
    let res = account(cookie).await.unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/login"), "{location}");

    b.close().await;
}

/// The sign-in page at phone width: no horizontal scrolling, full-width
/// form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_on_a_phone() {
    let app = sqlite_app().await;
    let b = Browser::open(&app).await;
    b.client.set_window_size(390, 844).await.expect("resize");
    b.goto("/login").await;
    b.wait_path("/login").await;
    b.assert_no_horizontal_scroll().await;
    b.screenshot("login-phone").await;
    b.close().await;
}

// ----- two-step sign-in (issue 18) -----

/// Moves the app's clock to just after the start of the next 30-second
/// step: a fresh code, never the one just used, with the whole step left
/// for the browser to type it.
fn fresh_step(app: &TestApp) {
    use clinic_auth::clock::Clock;
    let now = app.clock.now().timestamp();
    let next = (now / 30 + 1) * 30 + 1;
    app.clock
        .set(chrono::DateTime::from_timestamp(next, 0).unwrap());
}

/// The code Jane's phone would show now.
fn authenticator_code(app: &TestApp, secret: &clinic_auth::domain::mfa::TotpSecret) -> String {
    use clinic_auth::clock::Clock;
    use clinic_auth::domain::mfa::TimeStep;
    secret.code_at(TimeStep::at(app.clock.now()).unwrap())
}

/// Sets up the authenticator from the account page, reading the key off
/// the page as a person would type it into an app; sign out; sign in with
/// the password and the app's code. Then a recovery code instead, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticator_and_recovery_code_sign_in() {
    let app = sqlite_app().await;
    app.register("rosalind@example.com").await;
    let b = Browser::open(&app).await;
    b.sign_in("rosalind@example.com", PASSWORD).await;
    b.wait_path("/account").await;
    b.click("a[href='/account/two-step']").await;
    b.wait_path("/account/two-step").await;
    assert_eq!(b.text("h1").await, "Two-step sign-in");
    assert!(b.text(".status").await.contains("Off."));
    b.screenshot("two-step-off").await;

    b.click("form[action='/account/two-step/totp/setup'] button")
        .await;
    b.wait_for(".qr svg").await;
    let key = b.text("#manual-key").await;
    b.screenshot("two-step-setup").await;
    let secret = clinic_auth::domain::mfa::TotpSecret::from_manual_entry_key(&key.replace(' ', ""))
        .expect("the page shows a usable key");
    fresh_step(&app);
    b.fill("#code", &authenticator_code(&app, &secret)).await;
    b.click("form[action='/account/two-step/totp/confirm'] button")
        .await;
    b.wait_for("#recovery-codes").await;
    let codes: Vec<String> = b
        .text("#recovery-codes")
        .await
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert_eq!(
        b.count("form[action='/account/two-step/recovery-codes/download'] button")
            .await,
        1
    );
    b.screenshot("recovery-codes").await;
    b.click("a[href='/account/two-step']").await;
    b.wait_text(".codes-left", "10 of 10").await;
    b.screenshot("two-step-on").await;

    // Sign out, then in: the password leads to the code page.
    b.click("header form[action='/logout'] button").await;
    b.wait_path("/login").await;
    b.sign_in("rosalind@example.com", PASSWORD).await;
    b.wait_path("/login/code").await;
    assert_eq!(b.count("#code[autocomplete='one-time-code']").await, 1);
    b.screenshot("login-code").await;
    b.fill("#code", "000000").await;
    b.click("form[action='/login/code'] button").await;
    b.wait_for(".error-summary").await;
    assert_eq!(b.status().await, 401);
    b.screenshot("login-code-error").await;
    fresh_step(&app);
    b.fill("#code", &authenticator_code(&app, &secret)).await;
    b.click("form[action='/login/code'] button").await;
    b.wait_path("/account").await;
    assert!(b.text(".facts").await.contains("rosalind@example.com"));

    // Phone lost: a recovery code instead, and only once.
    b.click("header form[action='/logout'] button").await;
    b.wait_path("/login").await;
    b.sign_in("rosalind@example.com", PASSWORD).await;
    b.wait_path("/login/code").await;
    b.click("a[href='/login/recovery-code']").await;
    b.wait_path("/login/recovery-code").await;
    b.screenshot("login-recovery-code").await;
    b.fill("#code", &codes[0]).await;
    b.click("form[action='/login/recovery-code'] button").await;
    b.wait_path("/account").await;
    b.goto("/account/two-step").await;
    b.wait_text(".codes-left", "9 of 10").await;
    b.check_page("two-step-one-code-used").await;

    b.click("header form[action='/logout'] button").await;
    b.wait_path("/login").await;
    b.sign_in("rosalind@example.com", PASSWORD).await;
    b.wait_path("/login/code").await;
    b.goto("/login/recovery-code").await;
    b.fill("#code", &codes[0]).await;
    b.click("form[action='/login/recovery-code'] button").await;
    b.wait_text(".error-summary", "already used").await;
    b.check_page("login-recovery-code-used").await;
    assert_eq!(b.path().await, "/login/recovery-code");

    b.close().await;
}

/// After REAUTH_WINDOW, a change to two-step sign-in first asks for the
/// password and a code, then carries on where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_before_a_sensitive_change() {
    let app = sqlite_app().await;
    app.register("barbara@example.com").await;
    let b = Browser::open(&app).await;
    b.sign_in("barbara@example.com", PASSWORD).await;
    b.wait_path("/account").await;
    b.goto("/account/two-step").await;
    b.click("form[action='/account/two-step/totp/setup'] button")
        .await;
    let key = b.text("#manual-key").await;
    let secret =
        clinic_auth::domain::mfa::TotpSecret::from_manual_entry_key(&key.replace(' ', "")).unwrap();
    fresh_step(&app);
    b.fill("#code", &authenticator_code(&app, &secret)).await;
    b.click("form[action='/account/two-step/totp/confirm'] button")
        .await;
    b.wait_for("#recovery-codes").await;

    app.clock.advance(Duration::from_secs(11 * 60));
    b.goto("/account/two-step").await;
    b.click("form[action='/account/two-step/recovery-codes'] button")
        .await;
    b.wait_path("/account/reauth").await;
    assert_eq!(b.text("h1").await, "Confirm it is you");
    b.screenshot("reauth").await;
    b.fill("#password", PASSWORD).await;
    fresh_step(&app);
    b.fill("#code", &authenticator_code(&app, &secret)).await;
    b.click("form[action='/account/reauth'] button").await;
    b.wait_path("/account/two-step").await;
    b.click("form[action='/account/two-step/recovery-codes'] button")
        .await;
    b.wait_for("#recovery-codes").await;
    b.screenshot("recovery-codes-regenerated").await;

    // Staff set this up on their phones too: the pages fit a phone's width.
    b.client.set_window_size(390, 844).await.expect("resize");
    b.assert_no_horizontal_scroll().await;
    b.screenshot("recovery-codes-phone").await;
    b.goto("/account/two-step").await;
    b.wait_for(".codes-left").await;
    b.assert_no_horizontal_scroll().await;
    b.screenshot("two-step-phone").await;
    b.close().await;
}

// ----- passkeys (issue 18) -----

/// A command of a WebDriver extension fantoccini has no method for
/// (WebAuthn's virtual authenticators, chromedriver's browser log).
#[derive(Debug)]
struct ExtensionCommand {
    path: &'static str,
    body: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for ExtensionCommand {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session.unwrap_or_default();
        base.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(self.body.to_string()))
    }
}

impl Browser {
    /// Gives the browser a platform authenticator that keeps resident keys
    /// and verifies its user (as a laptop's fingerprint reader would),
    /// answering without a prompt.
    async fn add_virtual_authenticator(&self) {
        let added = self
            .client
            .issue_cmd(ExtensionCommand {
                path: "webauthn/authenticator",
                body: json!({
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserConsenting": true,
                    "isUserVerified": true,
                }),
            })
            .await
            .expect("add a virtual authenticator");
        assert!(added.is_string(), "authenticator id: {added}");
    }
}

/// An app whose APP_URL is the address the browser uses: WebAuthn's RP id
/// must be a domain (localhost), never an IP address.
async fn passkey_app() -> (TestApp, String) {
    let port = common::net::free_port();
    let origin = format!("http://localhost:{port}");
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("PORT", &port.to_string()), ("APP_URL", &origin)],
    )
    .await;
    (app, origin)
}

/// Register a passkey from the account page, sign out, sign in with it
/// from the sign-in page; the pages that load the script (and only they)
/// allow it in their CSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_added_on_the_account_page_signs_in() {
    let (app, origin) = passkey_app().await;
    app.register("mary@example.com").await;
    let b = Browser::open(&app).await;
    b.add_virtual_authenticator().await;

    b.goto(&format!("{origin}/login")).await;
    b.wait_path("/login").await;
    // The script shows the passkey button.
    b.wait_for("form[data-passkey='sign-in']:not([hidden]) button")
        .await;
    b.screenshot("login-with-passkey").await;
    b.fill("#email", "mary@example.com").await;
    b.fill("#password", PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_path("/account").await;
    // Passkeys live on the two-step sign-in page.
    b.click("a[href='/account/two-step']").await;
    b.wait_path("/account/two-step").await;
    assert!(b.page_text().await.contains("You have no passkeys yet."));

    b.fill("#passkey-name", "Work laptop").await;
    b.click("form[data-passkey='register']:not([hidden]) button[type=submit]")
        .await;
    b.wait_text(".notice", "Passkey \u{201c}Work laptop\u{201d} added.")
        .await;
    let table = b.text("table.passkeys").await;
    assert!(b.value("table.passkeys input[name=name]").await == "Work laptop");
    assert!(table.contains("Never"), "{table}");
    b.screenshot("account-passkeys").await;
    emails(&app, "A passkey was added", 1).await;

    b.click("header form[action='/logout'] button").await;
    b.wait_path("/login").await;
    b.click("form[data-passkey='sign-in']:not([hidden]) button")
        .await;
    b.wait_path("/account").await;
    assert!(b.text(".who").await.contains("Dr Jane Smith"));
    b.goto(&format!("{origin}/account/two-step")).await;
    b.wait_path("/account/two-step").await;
    // Used now.
    let table = b.text("table.passkeys").await;
    assert!(!table.contains("Never"), "{table}");
    b.screenshot("account-after-passkey-sign-in").await;

    // Renamed and removed with plain forms (the sign-in is recent).
    b.fill("table.passkeys input[name=name]", "Old laptop")
        .await;
    b.click("table.passkeys form[action$='/rename'] button")
        .await;
    b.wait_text(".notice", "Passkey renamed.").await;
    b.check_page("account-passkey-renamed").await;
    assert_eq!(
        b.value("table.passkeys input[name=name]").await,
        "Old laptop"
    );
    b.click("table.passkeys form[action$='/remove'] button")
        .await;
    b.wait_text(".notice", "Passkey removed.").await;
    b.check_page("account-passkey-removed").await;
    assert!(b.page_text().await.contains("You have no passkeys yet."));

    // The script is allowed only where it is loaded.
    let csp = |path: &'static str| {
        let url = app.url(path);
        async move {
            let res = common::plain_client().get(url).send().await.unwrap();
            res.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert!(csp("/login").await.contains("script-src 'self'"));
    assert!(!csp("/register").await.contains("script-src"));
    assert!(!csp("/forgot-password").await.contains("script-src"));
    let script = common::plain_client()
        .get(app.url("/static/js/passkeys.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    b.close().await;
}

/// A passkey made for another site (another origin, same RP id) is
/// refused by this one: the person stays signed out and is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_from_another_origin_is_refused() {
    let (first, first_origin) = passkey_app().await;
    let (second, second_origin) = passkey_app().await;
    first.register("mary@example.com").await;
    second.register("mary@example.com").await;
    let b = Browser::open(&first).await;
    b.add_virtual_authenticator().await;

    b.goto(&format!("{first_origin}/login")).await;
    b.fill("#email", "mary@example.com").await;
    b.fill("#password", PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_path("/account").await;
    b.goto(&format!("{first_origin}/account/two-step")).await;
    b.wait_path("/account/two-step").await;
    b.click("form[data-passkey='register']:not([hidden]) button[type=submit]")
        .await;
    b.wait_text(".notice", "added.").await;

    b.goto(&format!("{second_origin}/login")).await;
    b.wait_path("/login").await;
    b.click("form[data-passkey='sign-in']:not([hidden]) button")
        .await;
    b.wait_text(".notice", "This passkey was not accepted.")
        .await;
    assert_eq!(b.path().await, "/login/passkey");
    b.screenshot("login-passkey-refused").await;
    b.goto(&format!("{second_origin}/account")).await;
    b.wait_path("/login").await;
    drop(second);

    b.close().await;
}

// ----- accessibility (issue 19) -----

/// WCAG 1.4.10 reflow: the unverified account page names the address the
/// link went to; a long one wraps instead of widening the page at 320 and
/// 390 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_address_wraps_on_a_phone() {
    let app = sqlite_app().await;
    let email = "reception.northside@harbourviewclinic.com.au";
    app.register(email).await;
    let b = Browser::open(&app).await;
    b.sign_in(email, PASSWORD).await;
    b.wait_path("/account").await;
    let text = b.page_text().await;
    assert!(
        text.contains(&format!("We sent a confirmation link to {email}")),
        "{text}"
    );
    for width in [320, 390] {
        b.set_viewport_width(width).await;
        b.assert_no_horizontal_scroll().await;
        b.screenshot(&format!("account-unverified-{width}")).await;
    }
    b.close().await;
}

/// WCAG 2.4.11/1.4.11: the focus indicator keeps at least 3:1 against each
/// background it is drawn on: white cards and header, the page, the error
/// summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn focus_indicators_contrast_with_their_backgrounds() {
    let app = sqlite_app().await;
    app.register("ines@example.com").await;
    let b = Browser::open(&app).await;
    b.goto("/login").await;
    b.wait_path("/login").await;
    // Nothing clicked yet: focus from a script shows the keyboard ring.
    let mut measured = Vec::new();
    for css in [
        "#email",                            // an input on the white form card
        "form[action='/login'] button",      // a button on the card
        ".aside a[href='/forgot-password']", // a link on the page background
        "header a.brand",                    // the white header
    ] {
        measured.push(b.focus_contrast(css).await);
    }
    b.sign_in("ines@example.com", "Not!TheRightOne-42").await;
    b.wait_for(".error-summary").await;
    // The summary's links sit on its pale red background.
    measured.push(b.focus_contrast(".error-summary a").await);
    b.check_page("login-error-focused").await;
    for (ratio, what) in &measured {
        println!("focus contrast {ratio:.2}:1 for {what}");
        assert!(*ratio >= 3.0, "focus indicator below 3:1: {what}");
    }
    b.close().await;
}

/// The header's "Sign out" is a comfortable target on a touch screen: at
/// least 44 px tall where the pointer is coarse (a phone, emulated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_is_a_large_target_on_a_touch_screen() {
    let app = sqlite_app().await;
    app.register("oliver@example.com").await;
    let touch = Browser::open_touch(&app).await;
    touch.sign_in("oliver@example.com", PASSWORD).await;
    touch.wait_path("/account").await;
    let measure = "return [matchMedia('(pointer: coarse)').matches, \
                   document.querySelector(\"header form[action='/logout'] button\")\
                   .getBoundingClientRect().height];";
    let answer = touch
        .client
        .execute(measure, vec![])
        .await
        .expect("measure");
    assert_eq!(
        answer[0],
        json!(true),
        "touch emulation: the pointer is coarse"
    );
    let height = answer[1].as_f64().expect("height");
    println!("Sign out on a touch screen: {height} px tall");
    assert!(
        height >= 44.0,
        "Sign out is {height} px tall on a touch screen"
    );
    // Every other button on the page too (the session row's "Sign out",
    // the small secondary ones): the smallest visible one.
    app.login("oliver@example.com", PASSWORD).await;
    touch.goto("/account").await;
    touch.wait_for("table.sessions form.inline button").await;
    let smallest = touch
        .client
        .execute(
            "return Array.from(document.querySelectorAll('main button, main a.button'))\
               .filter((b) => b.offsetParent !== null)\
               .map((b) => [b.getBoundingClientRect().height, b.textContent.trim()])\
               .sort((x, y) => x[0] - y[0])[0];",
            vec![],
        )
        .await
        .expect("measure the buttons");
    let height = smallest[0].as_f64().expect("height");
    assert!(
        height >= 44.0,
        "{} is {height} px tall on a touch screen",
        smallest[1]
    );
    touch.assert_no_horizontal_scroll().await;
    touch.screenshot("account-touch").await;
    touch.close().await;

    // A mouse keeps the compact link-style button.
    let desk = Browser::open(&app).await;
    desk.sign_in("oliver@example.com", PASSWORD).await;
    desk.wait_path("/account").await;
    let answer = desk.client.execute(measure, vec![]).await.expect("measure");
    assert_eq!(answer[0], json!(false), "a mouse is a fine pointer");
    desk.close().await;
}

/// Breaking the glass from the account page (issue 19): a reason too short
/// is refused next to the field, then the red banner shows on every page
/// until the user ends it; each state checked (axe, console) and shot at
/// phone and desktop widths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaking_the_glass_from_the_account_page() {
    let app = sqlite_app().await;
    let user = app.register("jane@example.com").await;
    let id = clinic_auth::domain::UserId::new(user["id"].as_str().unwrap());
    assert!(app
        .store()
        .await
        .set_emergency_access(&id, true, chrono::Utc::now())
        .await
        .unwrap());
    let b = Browser::open(&app).await;
    b.sign_in("jane@example.com", PASSWORD).await;
    b.wait_path("/account").await;
    b.wait_for("#emergency").await;

    b.fill("#reason", "urgent").await;
    b.click("form[action='/account/emergency'] button[type=submit]")
        .await;
    b.wait_for("#emergency .error-summary").await;
    assert_eq!(b.count("#reason[aria-invalid=true]").await, 1);
    assert!(b
        .text("#reason-error")
        .await
        .contains("at least 20 characters"));
    b.screenshot("emergency-reason-too-short").await;

    b.fill(
        "#reason",
        "Patient in bay 3 unconscious; allergy record held by cardiology",
    )
    .await;
    b.click("form[action='/account/emergency'] button[type=submit]")
        .await;
    b.wait_for(".emergency-banner").await;
    assert!(b
        .text(".emergency-banner")
        .await
        .contains("Emergency access is on until"));
    for width in [390, 1280] {
        b.set_viewport_width(width).await;
        b.screenshot(&format!("emergency-on-{width}")).await;
    }
    b.goto("/account/two-step").await;
    b.wait_for(".emergency-banner").await;
    b.check_page("two-step-during-emergency").await;

    b.goto("/account").await;
    b.click("form[action='/account/emergency/end'] button[type=submit]")
        .await;
    b.wait_text(".notice", "Emergency access has ended.").await;
    assert_eq!(b.count(".emergency-banner").await, 0);
    b.check_page("emergency-ended").await;
    b.close().await;
}

/// Shoots the page at phone and desktop widths (each shot checked by axe
/// and the console), then goes back to the desktop width.
async fn shoot_both_widths(b: &Browser, name: &str) {
    for width in [390, 1280] {
        b.set_viewport_width(width).await;
        b.screenshot(&format!("{name}-{width}")).await;
    }
}

/// The admin console (issue 19) in Chromium: every page and its error
/// states, checked by axe and shot at 390 and 1280 px; an account
/// disabled through its confirmation page, an invitation sent, an
/// emergency use reviewed, and the page a doctor gets instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console() {
    let app = sqlite_app().await;
    common::admin_in(&app, "admin@example.com").await;
    let jane = app.register("jane@example.com").await;
    let jane_id = jane["id"].as_str().unwrap().to_owned();
    app.register("bob@example.com").await;
    // Jane breaks the glass from her app, so the review queue has a use.
    assert!(app
        .store()
        .await
        .set_emergency_access(
            &clinic_auth::domain::UserId::new(jane_id.clone()),
            true,
            chrono::Utc::now()
        )
        .await
        .unwrap());
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let res = app
        .client
        .post(app.url("/api/auth/emergency-access"))
        .bearer_auth(&access)
        .json(&json!({"reason": "Patient in bay 3 unconscious; allergy record needed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    let b = Browser::open(&app).await;
    b.sign_in("admin@example.com", PASSWORD).await;
    b.wait_path("/account").await;
    b.click("a[href='/admin']").await;
    b.wait_path("/admin").await;
    b.wait_for("table.users").await;
    shoot_both_widths(&b, "admin-users").await;

    b.fill("#q", "jan").await;
    b.click("form[role=search] button[type=submit]").await;
    b.wait_text("table.users", "jane@example.com").await;
    assert_eq!(b.count("table.users tbody tr").await, 1);
    b.goto("/admin?status=gone").await;
    b.wait_for(".error-summary").await;
    shoot_both_widths(&b, "admin-users-bad-filter").await;

    b.goto(&format!("/admin/users/{jane_id}")).await;
    b.wait_for("ul.actions").await;
    shoot_both_widths(&b, "admin-user").await;
    b.click(&format!("a[href='/admin/users/{jane_id}/disable']"))
        .await;
    b.wait_for("#reason").await;
    shoot_both_widths(&b, "admin-confirm-disable").await;
    b.fill("#reason", "Left the clinic on 30 November").await;
    b.click("main form button[type=submit]").await;
    b.wait_text(".notice", "The account is disabled").await;
    assert!(b.page_text().await.contains("Disabled since"));
    b.check_page("admin-user-disabled").await;

    b.goto(&format!("/admin/users/{jane_id}/erase")).await;
    b.wait_for("#reason").await;
    shoot_both_widths(&b, "admin-confirm-erase").await;

    b.goto("/admin/invitations").await;
    b.wait_for("#email").await;
    b.fill("#email", "not an address").await;
    b.fill("#name", "Nora Nurse").await;
    b.click("form[action='/admin/invitations'] button[type=submit]")
        .await;
    b.wait_for(".error-summary").await;
    assert_eq!(b.count("#email[aria-invalid=true]").await, 1);
    shoot_both_widths(&b, "admin-invitations-error").await;
    b.fill("#email", "nora@example.com").await;
    b.click("form[action='/admin/invitations'] button[type=submit]")
        .await;
    b.wait_text(".notice", "Invitation sent to nora@example.com.")
        .await;
    shoot_both_widths(&b, "admin-invitations").await;

    b.goto("/admin/audit").await;
    b.wait_for("table.events").await;
    shoot_both_widths(&b, "admin-audit").await;
    b.goto("/admin/audit?since=yesterday").await;
    b.wait_for(".error-summary").await;
    b.check_page("admin-audit-bad-filter").await;

    b.goto("/admin/emergency").await;
    b.wait_for("textarea[name=note]").await;
    shoot_both_widths(&b, "admin-emergency").await;
    b.click("form[action^='/admin/emergency/'] button[type=submit]")
        .await;
    b.wait_for(".error-summary").await;
    b.check_page("admin-emergency-note-missing").await;
    b.fill(
        "textarea[name=note]",
        "Checked with the ward: access justified",
    )
    .await;
    b.click("form[action^='/admin/emergency/'] button[type=submit]")
        .await;
    b.wait_text(".notice", "Your review is recorded.").await;
    b.check_page("admin-emergency-reviewed").await;

    // A doctor signed in gets the explanation, not the console.
    b.click("form[action='/logout'] button[type=submit]").await;
    b.wait_path("/login").await;
    b.sign_in("bob@example.com", PASSWORD).await;
    b.wait_path("/account").await;
    assert_eq!(b.count("a[href='/admin']").await, 0);
    b.goto("/admin").await;
    b.wait_text("h1", "For administrators only").await;
    assert_eq!(b.status().await, 403);
    shoot_both_widths(&b, "admin-forbidden").await;
    b.close().await;
}

/// An invitation accepted in the browser (issue 19): an admin invites a
/// nurse over the API; the emailed link opens the form, a password too
/// short is refused next to the field, a good one signs the nurse in with
/// the invited role and a verified address, and the link is dead after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_an_invitation() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("ROLES", "doctor,nurse")]).await;
    let (_, admin) = common::admin_in(&app, "admin@example.com").await;
    let res = app
        .client
        .post(app.url("/api/admin/invitations"))
        .bearer_auth(&admin)
        .json(&json!({"email": "nurse@example.com", "name": "Nia Okafor", "role": "nurse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    let mail = emails(&app, "You are invited to", 1).await.remove(0);
    assert!(mail.to.contains("nurse@example.com"), "{}", mail.to);
    let marker = "http://localhost:8000/invite?token=";
    let start = mail.text.find(marker).expect("the invitation link") + marker.len();
    let token: String = mail.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let link = format!("{}/invite?token={token}", app.base);

    let b = Browser::open(&app).await;
    b.goto(&link).await;
    b.wait_text("h1", "Set up your account").await;
    assert_eq!(b.status().await, 200);
    assert!(b.page_text().await.contains("as nurse"));
    assert_eq!(b.text(".address").await, "nurse@example.com");
    assert_eq!(b.value("#username").await, "nurse@example.com");
    assert_eq!(b.value("#name").await, "Nia Okafor", "prefilled");
    for width in [390, 1280] {
        b.set_viewport_width(width).await;
        b.screenshot(&format!("invitation-{width}")).await;
    }

    // Too short: refused next to the field; the link still works.
    b.fill("#password", "short1").await;
    b.fill("#password_confirm", "short1").await;
    b.click("form[action='/invite'] button[type=submit]").await;
    b.wait_for(".error-summary").await;
    assert_eq!(b.path().await, "/invite");
    assert_eq!(b.status().await, 422);
    let summary = b.text(".error-summary").await;
    assert!(summary.contains("at least"), "{summary}");
    assert_eq!(b.count("#password[aria-invalid=true]").await, 1);
    assert!(b.text("#password-error").await.contains("at least"));
    assert_eq!(b.value("#name").await, "Nia Okafor", "kept");
    assert_eq!(b.value("#password").await, "", "never kept");
    // The title says so, and the message is worded with the label.
    let title = b.client.title().await.unwrap();
    assert!(title.starts_with("Error: Set up your account"), "{title}");
    assert!(
        b.text("#password-error").await.starts_with("Password must"),
        "worded with the label"
    );
    b.screenshot("invitation-errors").await;

    b.fill("#password", NEW_PASSWORD).await;
    b.fill("#password_confirm", NEW_PASSWORD).await;
    b.click("form[action='/invite'] button[type=submit]").await;
    b.wait_path("/account").await;
    let facts = b.text(".facts").await;
    assert!(facts.contains("nurse@example.com"), "{facts}");
    assert!(
        facts.contains("Role\nnurse") || facts.contains("Role nurse"),
        "{facts}"
    );
    assert!(
        facts.contains("Email verified\nYes") || facts.contains("Email verified Yes"),
        "{facts}"
    );
    assert!(b.text(".who").await.contains("Nia Okafor"));
    b.screenshot("invitation-accepted-account").await;

    // Used once, the link is dead.
    b.goto(&link).await;
    b.wait_text("h1", "This invitation link has expired or was already used")
        .await;
    assert_eq!(b.status().await, 400);
    b.check_page("invitation-used-link").await;
    b.close().await;

    // The account exists with the invited role, as the audit trail says.
    let (access, _) = app.login("nurse@example.com", NEW_PASSWORD).await;
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["role"], "nurse");
    assert_eq!(me["verified"], true);
    let events = app.audit_events(&admin, "invitation_accepted").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user_id"], me["id"]);
}

/// Offboarding someone who is signed in (issue 19): an admin disables the
/// account over the API while its owner has the account page open; the
/// next page load finds the session gone, and the right password then
/// meets the disabled-account message (403), checked at both widths. The
/// owner's API sign-in dies with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_signed_in_elsewhere() {
    let app = sqlite_app().await;
    let user = app.register("leaver@example.com").await;
    let id = user["id"].as_str().unwrap().to_owned();
    let (_, admin) = common::admin_in(&app, "admin@example.com").await;
    let (access, refresh) = app.login("leaver@example.com", PASSWORD).await;

    let b = Browser::open(&app).await;
    b.sign_in("leaver@example.com", PASSWORD).await;
    b.wait_path("/account").await;
    assert!(b.text(".facts").await.contains("leaver@example.com"));

    let res = app
        .client
        .post(app.url(&format!("/api/admin/users/{id}/disable")))
        .bearer_auth(&admin)
        .json(&json!({"reason": "Left the clinic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["status"], "disabled", "{view}");

    // The open page's next load: the session has ended.
    b.client.refresh().await.expect("reload");
    b.wait_path("/login").await;
    b.check_page("disabled-session-ended").await;

    // The right password is told the account is disabled.
    b.sign_in("leaver@example.com", PASSWORD).await;
    b.wait_text(".error-summary", "This account is disabled.")
        .await;
    assert_eq!(b.path().await, "/login");
    assert_eq!(b.status().await, 403);
    assert!(b
        .text(".error-summary")
        .await
        .contains("Ask your clinic's administrator"));
    let title = b.client.title().await.expect("title");
    assert!(title.starts_with("Error: Sign in"), "{title}");
    for width in [390, 1280] {
        b.set_viewport_width(width).await;
        b.screenshot(&format!("login-disabled-{width}")).await;
    }
    // Still signed out: the account page sends us back.
    b.goto("/account").await;
    b.wait_path("/login").await;
    b.close().await;

    // The API sign-in ended too.
    app.access_refused(&access).await;
    app.refresh_refused(&refresh).await;
}

/// Serves `dir` (a static site) on a port of its own on 127.0.0.1: the
/// second origin an SPA lives on.
async fn serve_static(dir: &str) -> u16 {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let site = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(root));
    tokio::spawn(async move { axum::serve(listener, site).await });
    port
}

/// The example SPA (examples/spa, issue 20) at `spa` signs in, reads /me,
/// refreshes with the HttpOnly cookie and signs out against the API at
/// `auth`, with `fetch(..., {credentials: "include"})` and CORS; the
/// server ends the sign-in.
async fn the_example_spa_signs_in_and_out(app: &TestApp, b: &Browser, spa: &str, auth: &str) {
    the_example_spa_signs_in(b, spa, auth).await;
    b.click("#refresh").await;
    b.wait_text("#status", "Refreshed.").await;
    // A new page load resumes the sign-in from the cookie alone.
    b.goto(&format!("{spa}/index.html?auth={auth}")).await;
    b.wait_text("#status", "Signed in as Dr Jane Smith (doctor).")
        .await;

    b.click("#sign-out").await;
    b.wait_text("#status", "Signed out.").await;
    // The server ended the sign-in: the page cannot resume it.
    b.goto(&format!("{spa}/index.html?auth={auth}")).await;
    b.wait_text("#status", "Signed out.").await;
    app.flush_audit().await;
    let logouts = app
        .store()
        .await
        .query_audit_events(&clinic_auth::storage::AuditQuery {
            event: Some(clinic_auth::domain::AuditEvent::Logout),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(logouts.len(), 1, "the SPA's sign-out reached the server");
}

/// The example SPA at `spa`, signed out, signs Jane in against `auth`.
async fn the_example_spa_signs_in(b: &Browser, spa: &str, auth: &str) {
    b.goto(&format!("{spa}/index.html?auth={auth}")).await;
    b.wait_text("#status", "Signed out.").await;
    b.fill("#email", "jane@example.com").await;
    b.fill("#password", PASSWORD).await;
    b.click("#sign-in button[type=submit]").await;
    b.wait_text("#status", "Signed in as Dr Jane Smith (doctor).")
        .await;
}

/// Same site: http://localhost:A calling http://localhost:B with the
/// default SameSite=Strict cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_spa_on_another_origin() {
    let spa = format!("http://localhost:{}", serve_static("examples/spa").await);
    let app = TestApp::with_jane(Backend::Sqlite, &[("CORS_ORIGINS", &spa)]).await;
    let auth = format!("http://localhost:{}", app.addr.port());
    let b = Browser::open(&app).await;
    the_example_spa_signs_in_and_out(&app, &b, &spa, &auth).await;
    b.close().await;
}

/// Another site: the SPA at http://localhost:A calls the API at
/// https://127.0.0.1:B (another host, and another scheme: cross-site by
/// any reading), with REFRESH_COOKIE_SAMESITE=none. A SameSite=None cookie
/// must be Secure, so the API is reached through a TLS front with a
/// self-signed certificate made for the test (as production puts a TLS
/// proxy in front of the service). Without `none` the same cycle fails:
/// Chromium does not send a Strict cookie on a cross-site fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_spa_on_another_site() {
    let spa = format!("http://localhost:{}", serve_static("examples/spa").await);
    let certs = tempfile::tempdir().unwrap();
    let front = TlsFront::bind(certs.path()).await;
    let auth = format!("https://127.0.0.1:{}", front.port);
    let app = TestApp::with_jane(
        Backend::Sqlite,
        &[
            ("CORS_ORIGINS", &spa),
            ("APP_URL", &auth),
            ("REFRESH_COOKIE_SAMESITE", "none"),
        ],
    )
    .await;
    front.forward_to(app.addr);
    let b = Browser::open_trusting_test_certificates(&app).await;
    the_example_spa_signs_in_and_out(&app, &b, &spa, &auth).await;
    b.close().await;

    // The control: the default Strict cookie is not sent cross-site, so
    // the same SPA signs in but cannot refresh.
    let certs = tempfile::tempdir().unwrap();
    let front = TlsFront::bind(certs.path()).await;
    let auth = format!("https://127.0.0.1:{}", front.port);
    let app = TestApp::with_jane(
        Backend::Sqlite,
        &[("CORS_ORIGINS", &spa), ("APP_URL", &auth)],
    )
    .await;
    front.forward_to(app.addr);
    let b = Browser::open_trusting_test_certificates(&app).await;
    the_example_spa_signs_in(&b, &spa, &auth).await;
    b.click("#refresh").await;
    b.wait_text("#status", "Signed out: The session has ended")
        .await;
    b.close().await;
}

/// A TLS-terminating front on 127.0.0.1 with a self-signed certificate
/// (made by the openssl command line for 127.0.0.1 and localhost), handing
/// each connection to the app as plain TCP.
struct TlsFront {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    port: u16,
}

impl TlsFront {
    async fn bind(dir: &std::path::Path) -> Self {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("the openssl command line");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let chain = vec![CertificateDer::from_pem_file(&cert).unwrap()];
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        Self {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            port,
        }
    }

    /// Starts serving: every connection, once its handshake is done, is
    /// piped to `app`.
    fn forward_to(self, app: std::net::SocketAddr) {
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = self.listener.accept().await else {
                    return;
                };
                let acceptor = self.acceptor.clone();
                tokio::spawn(async move {
                    // A handshake Chromium gives up on is no test failure.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(app).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
    }
}
