//! `kedge agent --tls-cert --tls-key --tls-client-ca` against curl and the `kedge` CLI, with a CA this
//! test makes itself: the API speaks only HTTPS, admits only clients holding a certificate of that CA
//! (and still wants the bearer token), and answers plain HTTP on its port with a 400 that says why.

use crate::api_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use api_support::{kedge_bin, kedge_command, stderr, stdout, AgentGuard};
use kedge_tests::pki::{make_ca, make_leaf};
use kedge_tests::{eventually, run_id};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a PEM file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_https_with_client_certificates_and_refuses_plain_http() {
    let run = run_id();
    let state_dir = std::env::temp_dir().join(format!("kedge-tls-{run}"));
    let pki = state_dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let (ca_pem, ca) = make_ca("kedge test CA");
    let (server_pem, server_key) = make_leaf(&ca, &["localhost", "127.0.0.1"], false);
    let (client_pem, client_key) = make_leaf(&ca, &["kedge-operator"], true);
    let (_, rogue_ca) = make_ca("somebody else's CA");
    let (rogue_pem, rogue_key) = make_leaf(&rogue_ca, &["kedge-operator"], true);
    let ca_file = write(&pki, "ca.pem", &ca_pem);
    let server_file = write(&pki, "server.pem", &server_pem);
    let server_key_file = write(&pki, "server.key", &server_key);
    let client_file = write(&pki, "client.pem", &client_pem);
    let client_key_file = write(&pki, "client.key", &client_key);
    let rogue_file = write(&pki, "rogue.pem", &rogue_pem);
    let rogue_key_file = write(&pki, "rogue.key", &rogue_key);

    let mut agent = AgentGuard::spawn(
        &state_dir,
        &format!("tls-{run}"),
        &["--tls-cert", &server_file, "--tls-key", &server_key_file, "--tls-client-ca", &ca_file],
    );
    let listen = agent.listening_address().await;
    let token_file = state_dir.join("api-token");
    let token_path = token_file.to_str().unwrap().to_owned();
    let https = format!("https://{listen}");
    let healthz = format!("{https}/healthz");
    let version_url = format!("{https}/version");
    let mtls_curl = |extra: &[&str]| {
        let mut args = vec![
            "--cacert",
            ca_file.as_str(),
            "--cert",
            client_file.as_str(),
            "--key",
            client_key_file.as_str(),
        ];
        args.extend_from_slice(extra);
        curl(&args)
    };

    eventually("the agent's HTTPS API answers", Duration::from_secs(30), || async {
        mtls_curl(&[&healthz]).status.success().then_some(())
    })
    .await;
    let token = std::fs::read_to_string(&token_file).expect("the agent's token").trim().to_owned();
    let bearer = format!("Authorization: Bearer {token}");

    // curl with the CA, a client certificate and the token.
    let version = mtls_curl(&["-f", "-H", &bearer, &version_url]);
    assert!(version.status.success(), "curl over mutual TLS: {}", stderr(&version));
    assert!(stdout(&version).contains(&format!("tls-{run}")), "{}", stdout(&version));
    // The certificate does not replace the token.
    let no_token = mtls_curl(&["-o", "/dev/null", "-w", "%{http_code}", &version_url]);
    assert_eq!(stdout(&no_token), "401", "a client certificate alone is not enough");
    // No client certificate, or one of another CA: the handshake fails and nothing is served.
    let anonymous = curl(&["--cacert", &ca_file, "-H", &bearer, &version_url]);
    assert!(!anonymous.status.success(), "served without a client certificate: {}", stdout(&anonymous));
    let rogue = curl(&[
        "--cacert",
        &ca_file,
        "--cert",
        &rogue_file,
        "--key",
        &rogue_key_file,
        "-H",
        &bearer,
        &version_url,
    ]);
    assert!(!rogue.status.success(), "served a certificate of another CA: {}", stdout(&rogue));
    // The server's certificate is checked too: without the CA curl refuses it.
    let untrusted = curl(&["--cert", &client_file, "--key", &client_key_file, &healthz]);
    assert!(!untrusted.status.success(), "curl trusted a certificate of an unknown CA");

    // Plain HTTP on the TLS port: a readable refusal, from curl and from the CLI.
    let plain = curl(&["-H", &bearer, "-w", "\n%{http_code}", &format!("http://{listen}/version")]);
    let plain_out = stdout(&plain);
    assert!(plain_out.ends_with("\n400") && plain_out.contains("speaks HTTPS"), "{plain_out}");

    let dir = tempfile::tempdir().unwrap();
    let kedge = |server: &str, extra: &[&str]| {
        kedge_command(dir.path())
            .args(["--server", server, "--token-file", &token_path])
            .args(extra)
            .arg("version")
            .output()
            .expect("kedge runs")
    };
    let cli_tls = [
        "--certificate-authority",
        &ca_file,
        "--client-certificate",
        &client_file,
        "--client-key",
        &client_key_file,
    ];
    let trusted = kedge(&https, &cli_tls);
    assert!(trusted.status.success(), "kedge over mutual TLS: {}", stderr(&trusted));
    assert!(stdout(&trusted).contains(&format!("on host tls-{run}")), "{}", stdout(&trusted));
    let without_certificate = kedge(&https, &["--certificate-authority", &ca_file]);
    assert_eq!(without_certificate.status.code(), Some(5), "{}", stderr(&without_certificate));
    let plain_cli = kedge(&format!("http://{listen}"), &[]);
    assert!(!plain_cli.status.success());
    assert!(stderr(&plain_cli).contains("speaks HTTPS"), "{}", stderr(&plain_cli));

    // A context remembers the CA and the client certificate.
    let config = dir.path().join("config.json");
    let config_path = config.to_str().unwrap();
    let set = kedge_command(dir.path())
        .env("KEDGE_CONFIG", config_path)
        .args(["config", "set-context", "secure", "--server", &https, "--token-file", &token_path])
        .args(cli_tls)
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", stderr(&set));
    let by_context =
        kedge_command(dir.path()).env("KEDGE_CONFIG", config_path).arg("version").output().unwrap();
    assert!(by_context.status.success(), "kedge by context: {}", stderr(&by_context));

    // Connections that never start their handshake do not stop others from being served.
    let idle = idle_connections(&listen, 1000);
    let took =
        time_healthz(&["--cacert", &ca_file, "--cert", &client_file, "--key", &client_key_file, &healthz]);
    assert!(took < Duration::from_secs(5), "/healthz over TLS took {took:?} beside 1,000 idle connections");
    drop(idle);
}

#[test]
fn an_unreadable_certificate_stops_the_agent_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let output = Command::new(kedge_bin())
        .args(["agent", "--state-dir", dir.path().join("state").to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--tls-cert", missing.to_str().unwrap(), "--tls-key", missing.to_str().unwrap()])
        .env_remove("KEDGE_STORE")
        .output()
        .expect("kedge agent runs");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("--tls-cert") && message.contains("missing.pem"), "{message}");
    assert!(!dir.path().join("state").exists(), "nothing is created before the TLS files are read");
    // A key without a certificate is a usage error (clap's exit 2).
    let half = Command::new(kedge_bin())
        .args(["agent", "--tls-key", missing.to_str().unwrap()])
        .output()
        .expect("kedge agent runs");
    assert_eq!(half.status.code(), Some(2), "{}", stderr(&half));
}

/// Opens `count` TCP connections to `address` that never send a byte.
fn idle_connections(address: &str, count: usize) -> Vec<std::net::TcpStream> {
    // The test needs the descriptors too (a soft limit of 1,024 is common).
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    (0..count)
        .map(|i| std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect()
}

/// How long `/healthz` takes to answer through curl with `args`.
fn time_healthz(args: &[&str]) -> Duration {
    let started = std::time::Instant::now();
    let answer = curl(args);
    assert!(answer.status.success(), "/healthz: {}", stderr(&answer));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_healthz_and_slow_clients_are_cut_off() {
    let run = run_id();
    let state_dir = std::env::temp_dir().join(format!("kedge-limits-{run}"));
    let mut agent = AgentGuard::spawn(&state_dir, &format!("limits-{run}"), &[]);
    let address = agent.listening_address().await;
    let healthz = format!("http://{address}/healthz");
    eventually("the agent's API answers", Duration::from_secs(30), || async {
        curl(&["-f", &healthz]).status.success().then_some(())
    })
    .await;

    let idle = idle_connections(&address, 1000);
    let took = time_healthz(&["-f", &healthz]);
    assert!(took < Duration::from_secs(5), "/healthz took {took:?} beside 1,000 idle connections");

    // A client that starts a request and never finishes its headers is closed by the server.
    use std::io::{Read, Write};
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the slow client was not cut off within 30 s: {closed:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The idle ones were closed too: the server ends them, the client sees end of file.
    let mut first = &idle[0];
    let mut byte = [0u8; 1];
    first.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(first.read(&mut byte).ok(), Some(0), "an idle connection was kept past the header timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_further_clients_in_the_backlog_until_a_connection_closes() {
    let run = run_id();
    let state_dir = std::env::temp_dir().join(format!("kedge-maxconn-{run}"));
    let mut agent = AgentGuard::spawn(&state_dir, &format!("maxconn-{run}"), &["--api-max-connections", "8"]);
    let address = agent.listening_address().await;
    let healthz = format!("http://{address}/healthz");
    eventually("the agent's API answers", Duration::from_secs(30), || async {
        curl(&["-f", &healthz]).status.success().then_some(())
    })
    .await;

    // Eight idle connections take every slot (the probes above have closed theirs: wait until the
    // ninth is the one left waiting, which proves the limit as well).
    let idle = idle_connections(&address, 8);
    let held = curl(&["--max-time", "2", "-f", &healthz]);
    assert_eq!(
        held.status.code(),
        Some(28),
        "a ninth client was answered (or failed otherwise) while 8 connections held every slot: {}",
        stderr(&held)
    );
    // Once they close, the server accepts again.
    drop(idle);
    eventually("/healthz answers once the idle connections are gone", Duration::from_secs(15), || async {
        curl(&["--max-time", "2", "-f", &healthz]).status.success().then_some(())
    })
    .await;
    // A limit of 0 is refused at start, with clap's usage exit.
    let zero = Command::new(kedge_bin()).args(["agent", "--api-max-connections", "0"]).output().unwrap();
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
}
