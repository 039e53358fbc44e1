use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<RegistryAuth, RegistryConfigError> {
    RegistryAuth::parse(text, Path::new("/etc/kedge/registries.json"))
}

/// base64 of `user:password`, as `docker login` writes it.
fn auth(user_and_password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(user_and_password)
}

/// `check(config, image, expected user)`: which user's credentials go with a pull of `image`.
fn check(config: &str, image: &str, expected_user: Option<&str>) {
    let parsed = parse(config).unwrap_or_else(|e| panic!("{config}: {e}"));
    let user = parsed.for_image(image).and_then(|c| c.username.as_deref());
    assert_eq!(user, expected_user, "{image} with {config}");
}

#[test]
fn credentials_go_to_the_registry_of_the_image() {
    let config = format!(
        r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}},
                       "127.0.0.1:5000": {{"auth": "{}"}},
                       "http://Registry.Example.com/v2/": {{"username": "carol", "password": "c"}}}}}}"#,
        auth("alice:a"),
        auth("bob:b:with:colons")
    );
    check(&config, "busybox", Some("alice"));
    check(&config, "library/busybox:1", Some("alice"));
    check(&config, "docker.io/library/busybox", Some("alice"));
    check(&config, "127.0.0.1:5000/app:1", Some("bob"));
    check(&config, "127.0.0.1:5001/app:1", None);
    check(&config, "registry.example.com/team/app@sha256:abc", Some("carol"));
    check(&config, "localhost/app", None);
    let parsed = parse(&config).unwrap();
    let bob = parsed.for_image("127.0.0.1:5000/app").unwrap().to_engine();
    assert_eq!(bob.password.as_deref(), Some("b:with:colons"), "only the first colon splits");
    assert_eq!(bob.serveraddress.as_deref(), Some("127.0.0.1:5000"));
}

#[test]
fn empty_entries_and_missing_auths_give_no_credentials() {
    check(r#"{}"#, "busybox", None);
    check(r#"{"auths": {"docker.io": {}}, "credsStore": "desktop"}"#, "busybox", None);
    assert!(parse(r#"{"credsStore": "desktop"}"#).unwrap().names_credential_helpers());
    assert!(!parse(r#"{"auths": {}}"#).unwrap().names_credential_helpers());
    let token = parse(r#"{"auths": {"ghcr.io": {"identitytoken": "tok"}}}"#).unwrap();
    let engine = token.for_image("ghcr.io/o/app").unwrap().to_engine();
    assert_eq!((engine.username, engine.identitytoken.as_deref()), (None, Some("tok")));
}

#[test]
fn a_bad_file_names_the_file_and_the_field_but_not_the_secret() {
    let check_error = |text: &str, field: &str, problem: &str| {
        let error = parse(text).expect_err(text);
        assert_eq!(error.field, field, "{text}");
        let message = error.to_string();
        assert!(message.contains("/etc/kedge/registries.json"), "{message}");
        assert!(message.contains(problem), "{message}");
        assert!(!message.contains("s3cret"), "the value is never quoted: {message}");
    };
    check_error("{\"auths\": {\n  \"r.io\": {\"auth\": s3cret}}}", "(document)", "line 2");
    check_error("[]", "(document)", "JSON object");
    check_error(r#"{"auths": ["s3cret"]}"#, "auths", "map");
    check_error(r#"{"auths": {"r.io": "s3cret"}}"#, "auths.\"r.io\"", "map");
    check_error(r#"{"auths": {"r.io": {"auth": "s3cret!!"}}}"#, "auths.\"r.io\".auth", "not base64");
    check_error(
        &format!(r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#, auth("s3cret")),
        "auths.\"r.io\".auth",
        "USER:PASSWORD",
    );
    check_error(r#"{"auths": {"r.io": {"password": "s3cret"}}}"#, "auths.\"r.io\".username", "missing");
    check_error(
        r#"{"auths": {"r.io": {"username": "u", "password": 7}}}"#,
        "auths.\"r.io\".password",
        "string",
    );
    let missing = RegistryAuth::from_file(Path::new("/nonexistent/kedge-registries.json")).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/kedge-registries.json"), "{missing}");
}

#[test]
fn debug_never_shows_a_password_or_token() {
    let config = format!(
        r#"{{"auths": {{"r.io": {{"auth": "{}"}}, "t.io": {{"identitytoken": "s3cret-token"}}}}}}"#,
        auth("alice:s3cret-password")
    );
    let parsed = parse(&config).unwrap();
    let shown = format!("{parsed:?} {:?} {:?}", parsed.for_image("r.io/a"), parsed.for_image("t.io/a"));
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("alice") && shown.contains("<redacted>"), "{shown}");
    let pretty = format!("{:#?}", parsed.for_image("r.io/a"));
    assert!(!pretty.contains("s3cret"), "{pretty}");
}
