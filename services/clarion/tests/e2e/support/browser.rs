//! Real headless Chromium for the console's browser tests (issue #29),
//! driven over WebDriver: the test starts `/usr/bin/chromedriver` on a free
//! port itself (killed with its browser on drop) and talks to it with
//! `fantoccini`. Each browser has a fresh, empty profile directory.
//!
//! Chromium and chromedriver are Debian's (`chromium`, `chromium-driver`),
//! installed by `scripts/test-deps.sh`: when they are missing the test
//! fails saying so (a browser test that skips silently proves nothing).
//!
//! Screenshots go to `target/console-screenshots/<name>.png` at the
//! workspace root, kept by CI as artifacts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's real binary (`/usr/bin/chromium` is a wrapper script).
const CHROMIUM_BINARIES: &[&str] = &["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

/// How long a page or an element may take to appear.
pub const WAIT: Duration = Duration::from_secs(20);

/// The flags this machine needs: headless as root, and no background
/// connections (the network is closed; Chromium would retry them forever).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Where the screenshots go: `<workspace>/target/console-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/console-screenshots")
        .to_path_buf()
}

fn chromium() -> PathBuf {
    let found = CHROMIUM_BINARIES.iter().map(Path::new).find(|p| p.exists());
    match (found, Path::new(CHROMEDRIVER).exists()) {
        (Some(bin), true) => bin.to_path_buf(),
        _ => panic!(
            "the console's browser tests need Debian's chromium and chromium-driver \
             ({CHROMEDRIVER} and /usr/bin/chromium): run scripts/test-deps.sh"
        ),
    }
}

/// A chromedriver process (and the browsers it starts: its process group),
/// killed on drop.
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started. Spelled
        // `kill -s KILL -- -<pgid>`: procps-ng's kill reads the shorter
        // `kill -KILL -<pgid>` as `kill(-1, SIGKILL)`, every process the user
        // owns, which took CI down with it.
        let pgid = self.child.id();
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
pub struct Browser {
    pub client: Client,
    /// The console's base URL (`http://127.0.0.1:port`).
    pub base: String,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser session for the console at `base`.
    pub async fn start(base: &str) -> Browser {
        use std::os::unix::process::CommandExt;
        let binary = chromium();
        let port = super::free_port();
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER}: {e} (run scripts/test-deps.sh)"));
        let driver = Driver { child };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": binary, "args": args }),
        );
        // Plain HTTP to chromedriver on loopback: no TLS needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(profile.path().join("chromedriver.log"))
                    .unwrap_or_default();
                panic!("starting Chromium through chromedriver: {e}\n{log}")
            });
        Browser {
            client,
            base: base.to_string(),
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens a console path (e.g. `/console/dead-letters`).
    pub async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    /// The current URL's path and query.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits for the element (the page it is on may still be loading).
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no {css} on {}: {e}", self.path().await),
        }
    }

    /// Whether the current page has the element now.
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Waits until the current path starts with `prefix`.
    pub async fn wait_path(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let path = self.path().await;
            if path.starts_with(prefix) {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "still at {path}, expected {prefix}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signs in through the form.
    pub async fn sign_in(&self, credential: &str) {
        self.open("/console/sign-in").await;
        self.fill("#credential", credential).await;
        self.click("#sign-in").await;
        // Only signed-in pages have the header's tenant.
        self.find("#current-tenant").await;
    }

    /// Saves the page as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session (the browser quits; chromedriver is killed on drop).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}
