use super::*;

fn line(object: &str, reason: &str, message: &str) -> Notification {
    Notification {
        kind: EventType::Warning,
        reason: reason.to_owned(),
        object: object.to_owned(),
        host: "h1".to_owned(),
        message: message.to_owned(),
        time: "2027-01-15T08:00:00Z".to_owned(),
        count: 1,
    }
}

fn settings() -> Settings {
    Settings {
        window: Duration::from_secs(3),
        repeat_interval: Duration::from_secs(300),
        capacity: 4,
        ..Settings::default()
    }
}

/// `(object, reason, count)` of each line of a batch.
fn summary(batch: &[Notification]) -> Vec<(String, String, u32)> {
    batch.iter().map(|line| (line.object.clone(), line.reason.clone(), line.count)).collect()
}

fn row(object: &str, reason: &str, count: u32) -> (String, String, u32) {
    (object.to_owned(), reason.to_owned(), count)
}

#[test]
fn the_format_is_chosen_by_the_url() {
    let check = |spec: &str, format: Format, redacted: &str| {
        let target = Target::parse(spec).unwrap();
        assert_eq!(target.format, format, "{spec}");
        assert_eq!(target.redacted(), redacted, "{spec}");
    };
    check("http://127.0.0.1:8080/hook", Format::Webhook, "http://127.0.0.1:8080/…");
    check("https://example.com/", Format::Webhook, "https://example.com");
    check("https://hooks.slack.com/services/T0/B0/secret", Format::Slack, "https://hooks.slack.com/…");
    check("slack+https://chat.example.com/hooks/abc", Format::Slack, "https://chat.example.com/…");
    check("https://ntfy.sh/my-secret-topic", Format::Ntfy, "https://ntfy.sh/…");
    check("ntfy+http://ntfy.lan:81/alerts", Format::Ntfy, "http://ntfy.lan:81/…");
    // The token never appears in an error either.
    for bad in ["ftp://example.com/x", "not a url", "slack+file:///etc/secret-token"] {
        let error = Target::parse(bad).unwrap_err().to_string();
        assert!(!error.contains("secret-token"), "{error}");
    }
}

#[test]
fn warnings_and_the_named_normal_events_are_notified() {
    assert!(is_notified(EventType::Warning, "RolledBack"));
    assert!(is_notified(EventType::Warning, "BackOff"));
    assert!(is_notified(EventType::Normal, "UpdateAvailable"));
    assert!(is_notified(EventType::Normal, "UpgradeSucceeded"));
    assert!(!is_notified(EventType::Normal, "Created"));
    assert!(!is_notified(EventType::Normal, "Restarted"));
}

#[tokio::test(start_paused = true)]
async fn a_window_of_events_is_one_batch() {
    let (notifier, mut batcher) = Notifier::new("h1".to_owned(), settings());
    let start = Instant::now();
    notifier.submit(line("default/web", "RolledBack", "rolled back to nginx:1"));
    let later = notifier.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        later.submit(line("default/db", "BackOff", "exited 1"));
    });
    let batch = batcher.next().await;
    assert_eq!(start.elapsed(), Duration::from_secs(3), "sent when the window after the first ends");
    assert_eq!(summary(&batch), vec![row("default/web", "RolledBack", 1), row("default/db", "BackOff", 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_is_one_line_then_one_summary_per_interval() {
    let (notifier, mut batcher) = Notifier::new("h1".to_owned(), Settings { capacity: 1000, ..settings() });
    let crasher = notifier.clone();
    // A crash every second for two minutes (the one at 3 s lands after the window closed).
    tokio::spawn(async move {
        for crash in 0..120 {
            crasher.submit(line("default/web", "BackOff", &format!("crash {crash}")));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let start = Instant::now();
    let first = batcher.next().await;
    assert_eq!(summary(&first), vec![row("default/web", "BackOff", 3)], "the window's crashes, folded");
    assert_eq!(first[0].message, "crash 2", "the latest message wins");
    // Nothing more until the repeat interval ends; then the held repeats, as one line.
    let second = batcher.next().await;
    assert_eq!(start.elapsed(), Duration::from_secs(303));
    assert_eq!(summary(&second), vec![row("default/web", "BackOff", 117)]);
    assert_eq!(second[0].message, "crash 119");
}

#[tokio::test(start_paused = true)]
async fn another_reason_for_the_same_object_is_not_held_back() {
    let (notifier, mut batcher) = Notifier::new("h1".to_owned(), settings());
    notifier.submit(line("default/web", "BackOff", "exited 1"));
    assert_eq!(summary(&batcher.next().await), vec![row("default/web", "BackOff", 1)]);
    notifier.submit(line("default/web", "BackOff", "exited 1"));
    notifier.submit(line("default/web", "RolledBack", "rolled back"));
    assert_eq!(summary(&batcher.next().await), vec![row("default/web", "RolledBack", 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_the_oldest_and_says_so() {
    let (notifier, mut batcher) = Notifier::new("h1".to_owned(), settings());
    for name in ["a", "b", "c", "d", "e", "f"] {
        notifier.submit(line(&format!("default/{name}"), "BackOff", "exited"));
    }
    assert_eq!(
        summary(&batcher.next().await),
        vec![
            row("default/c", "BackOff", 1),
            row("default/d", "BackOff", 1),
            row("default/e", "BackOff", 1),
            row("default/f", "BackOff", 1),
            row("Host/h1", "NotificationsDropped", 2),
        ]
    );
}

#[test]
fn the_formats_render_every_line() {
    let one = [line("default/web", "RolledBack", "rolled back to nginx:1")];
    assert_eq!(title("h1", &one), "kedge: RolledBack default/web");
    assert_eq!(text("h1", &one), "kedge on h1:\nWarning RolledBack default/web: rolled back to nginx:1");
    let mut repeated = line("default/db", "BackOff", "exited 1");
    repeated.count = 7;
    let two = [one[0].clone(), repeated];
    assert_eq!(title("h1", &two), "kedge: 2 events on h1");
    assert_eq!(
        text("h1", &two),
        "kedge on h1: 2 events\nWarning RolledBack default/web: rolled back to nginx:1\n\
         Warning BackOff default/db: exited 1 (7 times)"
    );
    let json = serde_json::to_value(&two[..1]).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "kind": "Warning", "reason": "RolledBack", "object": "default/web", "host": "h1",
            "message": "rolled back to nginx:1", "time": "2027-01-15T08:00:00Z", "count": 1
        }])
    );
}

#[test]
fn each_format_is_its_own_request() {
    let client = reqwest::Client::new();
    let batch = [line("default/web", "RolledBack", "rolled back to nginx:1")];
    let request = |spec: &str| render(&client, &Target::parse(spec).unwrap(), "h1", &batch).build().unwrap();
    let body = |request: &reqwest::Request| {
        String::from_utf8(request.body().and_then(|body| body.as_bytes()).unwrap().to_vec()).unwrap()
    };
    let header = |request: &reqwest::Request, name: &str| {
        request.headers().get(name).map(|value| value.to_str().unwrap().to_owned())
    };

    let webhook = request("http://127.0.0.1:9/hook");
    assert_eq!(webhook.method(), reqwest::Method::POST);
    assert_eq!(header(&webhook, "content-type").as_deref(), Some("application/json"));
    let items: serde_json::Value = serde_json::from_str(&body(&webhook)).unwrap();
    assert_eq!(items[0]["object"], "default/web");

    let slack = request("slack+https://chat.example.com/hooks/abc");
    assert_eq!(slack.url().as_str(), "https://chat.example.com/hooks/abc", "the prefix is not sent");
    let text: serde_json::Value = serde_json::from_str(&body(&slack)).unwrap();
    assert_eq!(text, serde_json::json!({ "text": text_of(&batch) }));

    let ntfy = request("ntfy+https://ntfy.example.com/alerts");
    assert_eq!(ntfy.url().as_str(), "https://ntfy.example.com/alerts");
    assert_eq!(header(&ntfy, "title").as_deref(), Some("kedge: RolledBack default/web"));
    assert_eq!(header(&ntfy, "priority").as_deref(), Some("high"));
    assert_eq!(body(&ntfy), text_of(&batch));
}

fn text_of(batch: &[Notification]) -> String {
    text("h1", batch)
}

#[tokio::test(start_paused = true)]
async fn held_repeats_join_the_next_occurrence_after_the_interval() {
    let (notifier, mut batcher) = Notifier::new("h1".to_owned(), settings());
    let start = Instant::now();
    notifier.submit(line("default/web", "BackOff", "crash 0"));
    assert_eq!(summary(&batcher.next().await), vec![row("default/web", "BackOff", 1)]);
    notifier.submit(line("default/web", "BackOff", "crash 1"));
    // Taken within the repeat interval: held back.
    assert_eq!(batcher.take(Instant::now()), vec![]);
    tokio::time::advance(Duration::from_secs(400)).await;
    notifier.submit(line("default/web", "BackOff", "crash 2"));
    let batch = batcher.take(start + Duration::from_secs(403));
    assert_eq!(summary(&batch), vec![row("default/web", "BackOff", 2)], "the held repeat is not lost");
    assert_eq!(batch[0].message, "crash 2");
}

#[tokio::test(start_paused = true)]
async fn a_flush_sends_without_waiting_for_the_window_and_waits_for_the_delivery() {
    let (notifier, mut batcher) = Notifier::new("h1".to_owned(), settings());
    notifier.submit(line("default/web", "RolledBack", "rolled back"));
    let start = Instant::now();
    let flusher = notifier.clone();
    let flushed = tokio::spawn(async move { flusher.flush(Duration::from_secs(60)).await });
    assert_eq!(summary(&batcher.next().await), vec![row("default/web", "RolledBack", 1)]);
    assert_eq!(start.elapsed(), Duration::ZERO, "no window while flushing");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!flushed.is_finished(), "the flush waits while the batch is in flight");
    batcher.queue.lock().in_flight = false;
    flushed.await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}
