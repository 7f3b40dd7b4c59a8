//! Several instances of the real binary on one SQLite file, as a clinic
//! runs them behind a load balancer on one host: contention between the
//! processes is decided by SQLite's file locks, and must never surface as
//! a 5xx or let a replayed refresh token slip past reuse detection.

#[path = "support/instance.rs"]
mod instance;
#[path = "support/net.rs"]
mod net;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instance::{shared_vars, Instance};
use reqwest::Client;
use serde_json::{json, Value};

const PASSWORD: &str = "Str0ng!Pass123";

/// Two instances on `dir/shared.db`, each with `extra` variables, started
/// one after the other (the second finds the schema migrated).
async fn two_instances(dir: &Path, extra: &[(&str, &str)]) -> (Instance, Instance) {
    let url = format!("sqlite://{}", dir.join("shared.db").display());
    let mut vars = shared_vars(("DATABASE_URL", &url));
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let a = Instance::start(&dir.join("a"), &vars).await;
    let b = Instance::start(&dir.join("b"), &vars).await;
    (a, b)
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The refresh cookie a response sets.
fn refresh_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers().get_all("set-cookie").iter().find_map(|v| {
        let pair = v.to_str().ok()?.split(';').next()?;
        let (name, value) = pair.split_once('=')?;
        (name == "refresh_token" && !value.is_empty()).then(|| value.to_owned())
    })
}

/// Registers `email` on `on` and signs in there: the refresh token.
async fn sign_in(client: &Client, on: &Instance, email: &str) -> String {
    let res = client
        .post(on.url("/api/auth/register"))
        .json(&json!({"name": "Dr Jane Smith", "email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "register {email}");
    let res = client
        .post(on.url("/api/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login {email}");
    refresh_cookie(&res).expect("login sets the refresh cookie")
}

/// POST /api/auth/refresh on `on` with `token`: status, error code (if
/// any) and the new token (if any).
async fn refresh(client: &Client, on: &Instance, token: &str) -> (u16, String, Option<String>) {
    let res = client
        .post(on.url("/api/auth/refresh"))
        .header("cookie", format!("refresh_token={token}"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let new = refresh_cookie(&res);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code, new)
}

/// The `detail` of every stored audit record of `event`, waiting (up to
/// 10 s) until there are `count`: each instance appends its records in the
/// background.
async fn audit_details(db: &Path, event: &str, count: usize) -> Vec<String> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let started = Instant::now();
    loop {
        let rows: Vec<(Option<String>,)> =
            sqlx::query_as("SELECT detail FROM audit_events WHERE event = ? ORDER BY seq")
                .bind(event)
                .fetch_all(&pool)
                .await
                .unwrap();
        if rows.len() >= count || started.elapsed() > Duration::from_secs(10) {
            pool.close().await;
            return rows.into_iter().map(|(d,)| d.unwrap_or_default()).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per instance, this many concurrent refreshes of one token.
const RACERS: usize = 90;

/// Signs in on one instance of two on one file, then presents the refresh
/// token 2 x RACERS times at once, half on each instance: `winners` of
/// them get a new token (the rotation, plus with a grace the one sibling)
/// and every other one is a replay, answered 401 after reuse detection
/// ran for it; never a 500. One of those replays ends the family, so every
/// token handed out in the race is dead afterwards.
async fn race_one_token(grace: &str, winners: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_instances(dir.path(), &[("REFRESH_REUSE_GRACE", grace)]).await;
    let client = client();
    let token = sign_in(&client, &a, "jane@example.com").await;
    let (a, b) = (Arc::new(a), Arc::new(b));

    let tasks: Vec<_> = (0..2 * RACERS)
        .map(|i| {
            let (client, token) = (client.clone(), token.clone());
            let on = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { refresh(&client, &on, &token).await })
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    let mut issued = Vec::new();
    for task in tasks {
        let (status, code, new) = task.await.unwrap();
        *outcomes.entry((status, code)).or_insert(0) += 1;
        issued.extend(new.filter(|_| status == 200));
    }
    let losers = 2 * RACERS - winners;
    let expected = BTreeMap::from([
        ((200, String::new()), winners),
        ((401, "invalid_refresh_token".to_owned()), losers),
    ]);
    assert_eq!(outcomes, expected, "{}{}", a.log(), b.log());

    let details = audit_details(
        &dir.path().join("shared.db"),
        "refresh_reuse_detected",
        losers,
    )
    .await;
    assert_eq!(details.len(), losers, "{details:?}");
    // The first replay revoked every live token of the family; the others
    // found it ended.
    let ended = format!(" revoked={winners}");
    assert_eq!(
        details.iter().filter(|d| d.ends_with(&ended)).count(),
        1,
        "{details:?}"
    );
    assert_eq!(issued.len(), winners);
    for new in &issued {
        let (status, code, _) = refresh(&client, &b, new).await;
        assert_eq!((status, code.as_str()), (401, "invalid_refresh_token"));
    }
}

/// REFRESH_REUSE_GRACE=0s: exactly one of 180 concurrent refreshes across
/// two processes wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_across_two_instances_have_one_winner_strict() {
    race_one_token("0s", 1).await;
}

/// The default grace: the winner and one sibling for a second tab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_across_two_instances_have_one_winner_and_one_sibling() {
    race_one_token("5s", 2).await;
}

/// One user's session on two instances: registers on one, signs in on the
/// other, refreshes back and forth, replays a retired token (strict reuse
/// detection ends the sign-in), signs in again, and finally signs out.
/// Returns every step whose answer was not the expected one.
async fn one_user_across(a: &Instance, b: &Instance, email: &str) -> Vec<String> {
    let client = client();
    let mut wrong = Vec::new();
    let mut expect = |step: &str, got: u16, want: u16| {
        if got != want {
            wrong.push(format!("{email} {step}: {got} instead of {want}"));
        }
    };
    let on = |i: usize| if i.is_multiple_of(2) { a } else { b };
    let res = client
        .post(a.url("/api/auth/register"))
        .json(&json!({"name": "Dr Mixed", "email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    expect("register", res.status().as_u16(), 201);
    for cycle in 0..3 {
        let res = client
            .post(on(cycle + 1).url("/api/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        expect("login", res.status().as_u16(), 200);
        let Some(mut token) = refresh_cookie(&res) else {
            continue;
        };
        let mut retired = token.clone();
        for step in 0..6 {
            let (status, _, new) = refresh(&client, on(step), &token).await;
            expect("refresh", status, 200);
            retired = std::mem::replace(&mut token, new.unwrap_or_default());
        }
        if cycle < 2 {
            // A copy of a retired token: the whole sign-in ends.
            let (status, _, _) = refresh(&client, on(cycle), &retired).await;
            expect("replay", status, 401);
            let (status, _, _) = refresh(&client, on(cycle + 1), &token).await;
            expect("refresh after the replay", status, 401);
        } else {
            let res = client
                .post(on(cycle).url("/api/auth/logout"))
                .header("cookie", format!("refresh_token={token}"))
                .send()
                .await
                .unwrap();
            expect("logout", res.status().as_u16(), 204);
        }
    }
    wrong
}

/// Registrations, sign-ins, refreshes, replays and sign-outs of many users
/// at once on both instances: every answer is the one a single instance
/// would give, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_on_two_instances_gets_no_server_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_instances(dir.path(), &[("REFRESH_REUSE_GRACE", "0s")]).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let users: Vec<_> = (0..12)
        .map(|i| {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                // Half start on each instance.
                let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                one_user_across(first, second, &format!("user{i}@example.com")).await
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for user in users {
        wrong.extend(user.await.unwrap());
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{}{}", a.log(), b.log());
}

/// Two instances started at the same moment on a new file (a deployment
/// bringing up its instances together, or upgrading them to a release
/// with a new migration) both come up: whichever applies a migration
/// second finds it applied instead of failing on "table already exists".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_started_together_on_a_new_file_both_come_up() {
    // A lost race was three starts in four; three rounds all but always
    // show one.
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shared.db").display());
        let vars = shared_vars(("DATABASE_URL", &url));
        let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
        let (a, b) = tokio::join!(
            Instance::start(&dir_a, &vars),
            Instance::start(&dir_b, &vars)
        );
        let client = client();
        let token = sign_in(&client, &a, &format!("round{round}@example.com")).await;
        let (status, _, _) = refresh(&client, &b, &token).await;
        assert_eq!(status, 200);
    }
}
