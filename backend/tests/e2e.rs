//! End to end: two real Chromium sessions (driven over WebDriver) and a plain WebSocket client
//! chat through the relay, which serves the release build of the web client from `dist/`.
//!
//! Needs `chromedriver` (or `$CHROMEDRIVER`) and Chromium, and `trunk build --release` run
//! first; `scripts/test.sh` provides all three. Fails with a clear message when one is missing.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use backend::{config::Config, startup};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Longest any one step may take.
const WAIT: Duration = Duration::from_secs(15);

/// WebDriver's code for the Enter key.
const ENTER: &str = "\u{E007}";

fn dist_dir() -> PathBuf {
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist");
    assert!(
        dist.join("index.html").is_file(),
        "no web client build in {}: run `trunk build --release` first (scripts/test.sh does)",
        dist.display()
    );
    dist
}

/// A chromedriver child process on a free loopback port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start {program}: {err} (install chromium-driver)")
            });
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session with its own profile.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(driver: &ChromeDriver, page: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--no-first-run",
                    "--window-size=1100,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("WebDriver session");
        client.goto(page).await.unwrap();
        let browser = Browser {
            client,
            _profile: profile,
        };
        browser.wait_for_text("[role=status]", "Connected").await;
        browser
    }

    /// Waits until the element at `selector` contains `needle`.
    async fn wait_for_text(&self, selector: &str, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(selector)).await
                && element.text().await.is_ok_and(|text| text.contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?} in {selector}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn field(&self, label: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(&format!("input[aria-label='{label}']")))
            .await
            .unwrap_or_else(|err| panic!("no field {label}: {err}"))
    }

    async fn rename(&self, name: &str) {
        let field = self.field("Display name").await;
        field.clear().await.unwrap();
        field.send_keys(&format!("{name}{ENTER}")).await.unwrap();
        self.wait_for_text(".members li.me", name).await;
    }

    async fn send_with_enter(&self, text: &str) {
        let field = self.field("Message").await;
        field.send_keys(&format!("{text}{ENTER}")).await.unwrap();
    }

    async fn send_with_button(&self, text: &str) {
        self.field("Message").await.send_keys(text).await.unwrap();
        let button = self
            .client
            .find(Locator::XPath(
                "//form[@class='composer']/button[text()='Send']",
            ))
            .await
            .unwrap();
        button.click().await.unwrap();
    }

    async fn save_screenshot(&self, name: &str) {
        if let Ok(png) = self.client.screenshot().await {
            let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
            let _ = std::fs::write(path, png);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_and_a_plain_client_chat_through_the_relay() {
    let config = Config {
        static_dir: dist_dir(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(startup::run(listener, config, std::future::pending()));
    let driver = ChromeDriver::start().await;
    let page = format!("http://{address}/");

    let alice = Browser::open(&driver, &page).await;
    let bob = Browser::open(&driver, &page).await;
    // Whatever happens below, close both sessions so no Chromium is left running.
    let outcome = std::panic::AssertUnwindSafe(chat(address, &alice, &bob))
        .catch_unwind()
        .await;
    alice.save_screenshot("e2e-alice").await;
    bob.save_screenshot("e2e-bob").await;
    let _ = alice.client.close().await;
    let _ = bob.client.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn chat(address: SocketAddr, alice: &Browser, bob: &Browser) {
    let (mut terminal, _) = tokio_tungstenite::connect_async(format!("ws://{address}/"))
        .await
        .expect("plain WebSocket client");
    alice.rename("Alice").await;
    bob.rename("Bob").await;
    bob.wait_for_text(".members", "Alice").await;

    alice.send_with_enter("hello from Alice").await;
    bob.wait_for_text("[role=log]", "hello from Alice").await;
    bob.wait_for_text("[role=log]", "Alice").await;
    alice
        .wait_for_text("[role=log] .msg.own", "hello from Alice")
        .await;

    bob.send_with_button("hi Alice, Bob here").await;
    alice
        .wait_for_text("[role=log]", "hi Alice, Bob here")
        .await;

    // The plain client is in the lobby too: it hears both, and they hear it.
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let frame = tokio::time::timeout(WAIT, terminal.next())
            .await
            .expect("the plain client heard nothing")
            .expect("plain socket ended")
            .expect("plain socket failed");
        if let Message::Text(text) = frame {
            heard.push(text.to_string());
        }
    }
    assert_eq!(
        heard,
        ["Alice: hello from Alice", "Bob: hi Alice, Bob here"]
    );

    terminal
        .send(Message::text("hello from a terminal"))
        .await
        .unwrap();
    alice
        .wait_for_text("[role=log]", "hello from a terminal")
        .await;
    bob.wait_for_text("[role=log]", "hello from a terminal")
        .await;
    bob.wait_for_text("[role=log]", "guest-").await;
}
